"""Does "false alarm" feedback work? A benign pattern that recurs on one machine, marked false
once, then a real fault on the same machine, through the pipeline's own detector and episodes.

`python -m detection_eval.feedback_eval [--minutes 180] [--seed 42] [--json PATH]`

The simulator's fleet runs with its clock fast-forwarded, as in `simulator_eval`; machine1 gets
a benign pattern (vibration +30 % for 15 s, as a tool change would make) every 20 minutes from
minute 40, and a real fault near the end: an overload (led by load), or bearing wear (led by
vibration, the same sensor as the benign pattern). Readings go in one-minute batches to
`fleetwatch.state.FleetState.process`, with the per-machine rules that the recorded false
alarms give at each batch's data time (`fleetwatch.feedback`, the product's defaults: a raise
of at most 0.05, fading over 7 days). With feedback, the operator marks the first benign
episode false when its "Resolved" arrives, as `influx-magic false-alarm` would.

Each arm reports how many benign repeats were alerted (before and after the mark), whether the
real fault was alerted and how long after its start, and the alerts on the other machines.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from detection_eval.tables import text_table
from fleetwatch.feedback import FalseAlarmRaise, FeedbackSettings, raise_for, rules_with_feedback
from fleetwatch.state import FleetState

START = 1_700_000_000.0  # a fixed epoch: the same seed gives the same readings
MACHINES = ("machine1", "machine2", "machine3")
FEATURES = ("temperature", "load", "power", "vibration")
PATTERN_EVERY_MIN = 20
PATTERN_FIRST_MIN = 40
PATTERN_SECONDS = 15
PATTERN_FACTOR = 1.3
FAULT_MINUTES = 4  # the real fault's length
# The real fault starts this long after the last benign pattern: past the 10 min cooldown that
# follows an alerted episode, so its latency compares across arms.
FAULT_AFTER_MIN = 15
BATCH_SECONDS = 60


@dataclass(frozen=True)
class Arm:
    """One run of the scenario: which real fault, and whether the operator gives feedback."""

    fault: str
    feedback: bool

    @property
    def name(self) -> str:
        return (
            f"{'false alarm on the first' if self.feedback else 'no feedback'}, then {self.fault}"
        )


@dataclass
class ArmResult:
    arm: str
    fault: str
    feedback: bool
    patterns: int  # benign repeats in the run
    patterns_alerted: int
    alerted_after_mark: int | None  # benign repeats alerted after the false alarm (None: no mark)
    repeats_after_mark: int | None
    fault_alerted: bool
    fault_latency_s: float | None
    other_alerts: int  # alerts on the machines without a pattern or fault
    raise_given: float | None
    lead_feature: str | None
    alerts: list[tuple[str, float]] = field(default_factory=list)  # (machine, minute)


def pattern_starts(minutes: float) -> list[float]:
    """Seconds (from START) at which the benign pattern starts, leaving room for the fault."""
    end = (minutes - FAULT_AFTER_MIN - FAULT_MINUTES - 2) * 60
    first, every = PATTERN_FIRST_MIN * 60, PATTERN_EVERY_MIN * 60
    return [float(t) for t in np.arange(first, end + 1, every)]


def readings(minutes: float, seed: int, fault: str) -> tuple[pd.DataFrame, float]:
    """The fleet's readings with the pattern and the fault on machine1; the fault's start."""
    from machine_simulator.signals import FaultSchedule, FaultWindow, Fleet, simulate

    fault_at = pattern_starts(minutes)[-1] + FAULT_AFTER_MIN * 60
    window = FaultWindow("machine1", fault, START + fault_at, START + fault_at + FAULT_MINUTES * 60)
    fleet = Fleet(list(MACHINES), seed=seed, schedule=FaultSchedule([window]))
    rows = [
        (r.machine_id, r.time, r.temperature, r.load, r.power, r.vibration)
        for batch in simulate(fleet, START, 1.0, int(minutes * 60))
        for r in batch
    ]
    frame = pd.DataFrame(rows, columns=["unique_id", "time", *FEATURES])
    offset = frame["time"] - START
    for at in pattern_starts(minutes):
        inside = (
            (frame["unique_id"] == "machine1") & (offset >= at) & (offset < at + PATTERN_SECONDS)
        )
        frame.loc[inside, "vibration"] = (frame.loc[inside, "vibration"] * PATTERN_FACTOR).round(1)
    return frame, fault_at


def run_arm(arm: Arm, minutes: float, seed: int) -> ArmResult:
    frame, fault_at = readings(minutes, seed, arm.fault)
    patterns = pattern_starts(minutes)
    settings = FeedbackSettings()
    state = FleetState.new()
    raises: list[FalseAlarmRaise] = []
    alerts: list[tuple[str, float]] = []
    mark_at: float | None = None
    lead: str | None = None
    batch_of = ((frame["time"] - START) // BATCH_SECONDS).astype(int)
    for _, batch in frame.groupby(batch_of, sort=True):
        now = float(batch["time"].max())
        rules = rules_with_feedback({}, raises, now, state.detector.config.threshold, settings)
        data = batch.assign(time=pd.to_datetime(batch["time"], unit="s", utc=True))
        _, events = state.process(data, rules=rules)
        for event in events:
            episode = event.episode
            if event.kind == "opened":
                alerts.append((episode.machine, event.time / 1e9 - START))
            elif arm.feedback and not raises and episode.machine == "machine1":
                lead = episode.top_features[0] if episode.top_features else None
                rule = rules.get("machine1")
                limit = state.detector.config.threshold
                if rule is not None:
                    limit = rule.limit(lead, limit)
                amount = raise_for(episode.peak_score, limit, settings)
                raises.append(FalseAlarmRaise("machine1", lead, amount, now))
                mark_at = now - START
    mine = [t for machine, t in alerts if machine == "machine1"]

    def alerted(start: float, within: float) -> float | None:
        found = [t for t in mine if start <= t < start + within]
        return found[0] - start if found else None

    hits = [alerted(p, PATTERN_EVERY_MIN * 60 / 2) is not None for p in patterns]
    after = [
        hit for p, hit in zip(patterns, hits, strict=True) if mark_at is not None and p > mark_at
    ]
    latency = alerted(fault_at, FAULT_MINUTES * 60 + 60)
    return ArmResult(
        arm=arm.name,
        fault=arm.fault,
        feedback=arm.feedback,
        patterns=len(patterns),
        patterns_alerted=sum(hits),
        alerted_after_mark=None if mark_at is None else sum(after),
        repeats_after_mark=None if mark_at is None else len(after),
        fault_alerted=latency is not None,
        fault_latency_s=latency,
        other_alerts=sum(1 for machine, _ in alerts if machine != "machine1"),
        raise_given=raises[0].amount if raises else None,
        lead_feature=lead,
        alerts=[(machine, round(t / 60, 2)) for machine, t in alerts],
    )


def evaluate(minutes: float = 180.0, seed: int = 42) -> list[ArmResult]:
    arms = [Arm(fault, feedback) for fault in ("overload", "bearing") for feedback in (False, True)]
    return [run_arm(arm, minutes, seed) for arm in arms]


def format_results(results: list[ArmResult], minutes: float, seed: int) -> str:
    rows = []
    for r in results:
        after = (
            "-"
            if r.alerted_after_mark is None
            else f"{r.alerted_after_mark} of {r.repeats_after_mark}"
        )
        real = f"yes, {r.fault_latency_s:.0f} s" if r.fault_alerted else "no"
        raised = "-" if r.raise_given is None else f"+{r.raise_given:.3f} ({r.lead_feature})"
        rows.append(
            (
                r.arm,
                [f"{r.patterns_alerted} of {r.patterns}", after, raised, real, str(r.other_alerts)],
            )
        )
    title = (
        f"false-alarm feedback: {len(MACHINES)} machines x {minutes:g} min, seed {seed}; machine1 "
        f"has a benign pattern (vibration +{(PATTERN_FACTOR - 1) * 100:.0f} % for "
        f"{PATTERN_SECONDS} s) every {PATTERN_EVERY_MIN} min, then a real fault"
    )
    columns = ["benign alerted", "after the mark", "raise", "real fault alerted", "other alerts"]
    return title + "\n" + text_table("run", columns, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detection_eval.feedback_eval")
    parser.add_argument("--minutes", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.minutes < PATTERN_FIRST_MIN + 2 * PATTERN_EVERY_MIN + FAULT_MINUTES + 6:
        parser.error(
            f"--minutes must be at least {PATTERN_FIRST_MIN + 2 * PATTERN_EVERY_MIN + FAULT_MINUTES + 6}"
        )
    results = evaluate(args.minutes, args.seed)
    print(format_results(results, args.minutes, args.seed))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
