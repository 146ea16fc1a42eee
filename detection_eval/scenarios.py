"""Simulator scenarios: the scripted faults on top of healthy behaviour a plant really shows.

- `standard`: the simulator's work cycle, faults every 10-20 minutes (`fault_script`'s
  defaults); 240 minutes by default.
- `daily`: machines on a daily shift pattern (`machine_simulator.signals.ShiftPattern`: load
  high from 06:00 to 22:00 UTC, 40 % of it at night, 30-minute ramps), 48 hours of simulated
  time fast-forwarded; faults every 30-90 minutes, so most of the time is healthy and every
  shift change is seen twice per machine.
- `restarts`: the same 48 hours at a constant pattern, with a restart in every healthy stretch
  long enough for one: the machine stops for 30-120 s (no readings: a data gap), cools down,
  and comes back with its work level moved by 5-15 load units up or down (`Outage`). A restart
  lies at least `grace` + 5 minutes after the fault before and 10 minutes before the next,
  so an episode it causes is a false one.

The start time is the same fixed epoch as the standard run (2023-11-14 22:13 UTC), so the
daily run begins at night and ramps up at 05:45.

>>> plan = build("restarts", ["m1", "m2"], seed=3, start=0.0, duration=48 * 3600.0,
...              kinds=("drift", "stuck"))
>>> len(plan.outages) > 10 and all(30 <= o.end - o.start <= 120 for o in plan.outages)
True
>>> all(not (f.start - 600 < o.end and o.start < f.end + 600) for o in plan.outages
...     for f in plan.faults if f.machine_id == o.machine_id)
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from detection_eval.episode_matching import DEFAULT_GRACE_SECONDS, Fault
from detection_eval.fault_script import DEFAULT_GAP_S, scripted_faults

SCENARIOS: dict[str, str] = {
    "standard": "work cycle, faults every 10-20 min",
    "daily": "day/night shift pattern with ramps, faults every 30-90 min",
    "restarts": "30-120 s data gaps (stops) then a level jump, faults every 30-90 min",
}
DEFAULT_MINUTES = {"standard": 240.0, "daily": 48 * 60.0, "restarts": 48 * 60.0}
LONG_GAP_S = (1800.0, 5400.0)
OUTAGE_S = (30.0, 120.0)
LEVEL_SHIFT = (5.0, 15.0)
OUTAGE_MARGIN_S = (
    600.0  # an outage starts at least grace + this after a fault and ends this before the next
)


@dataclass(frozen=True)
class Plan:
    """What a scenario injects: faults (the ground truth), outages and the shift pattern."""

    faults: list[Fault]
    outages: list = field(default_factory=list)  # machine_simulator.signals.Outage
    pattern: object | None = None  # machine_simulator.signals.ShiftPattern


def check_scenario(name: str) -> str:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")
    return name


def build(
    name: str,
    machine_ids: Sequence[str],
    seed: int,
    start: float,
    duration: float,
    kinds: Sequence[str],
    grace: float = DEFAULT_GRACE_SECONDS,
) -> Plan:
    """The faults, outages and pattern of scenario `name`, the same for a given seed."""
    from machine_simulator.signals import Outage, ShiftPattern

    check_scenario(name)
    gap = DEFAULT_GAP_S if name == "standard" else LONG_GAP_S
    faults = scripted_faults(machine_ids, start, duration, kinds, seed, gap=gap)
    if name == "daily":
        return Plan(faults, pattern=ShiftPattern())
    if name == "standard":
        return Plan(faults)
    rng = random.Random(f"restarts:{seed}")
    outages = []
    end = start + duration
    for machine_id in machine_ids:
        own = [f for f in faults if f.machine_id == machine_id]
        bounds = [(f.end, nxt.start) for f, nxt in zip(own, own[1:], strict=False)]
        bounds.append((own[-1].end if own else start, end))
        for after, before in bounds:
            length = rng.uniform(*OUTAGE_S)
            earliest = after + grace + OUTAGE_MARGIN_S
            latest = before - OUTAGE_MARGIN_S - length
            if latest < earliest:
                continue
            at = rng.uniform(earliest, latest)
            shift = rng.choice((-1.0, 1.0)) * rng.uniform(*LEVEL_SHIFT)
            outages.append(Outage(machine_id, at, at + length, shift))
    return Plan(faults, outages=outages)
