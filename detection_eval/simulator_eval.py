"""Scripted faults through the simulator and the pipeline's detection, scored against the truth.

The simulator's signal model (`machine_simulator.signals`) takes its clock from the caller, so
hours of fleet time run in seconds: every machine follows the scripted schedule
(`fault_script`) of a scenario (`scenarios`: the standard work cycle, a daily shift pattern,
or restarts with data gaps), readings go to the monitor in one-minute batches as the scheduled
pipeline would read them, and the episodes it reports are matched to the faults
(`episode_matching`). Everything is seeded, so a seed gives the same report; `pooled` adds
several seeds' reports into one (events, latencies and false episodes summed).

Latency is counted from the fault's start to the reading that opened the episode; the
production path adds Telegraf's flush interval and the pipeline's schedule on top.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import pandas as pd

from detection_eval import scenarios
from detection_eval.episode_matching import (
    DEFAULT_GRACE_SECONDS,
    AlertedSpan,
    Fault,
    KindResult,
    MatchResult,
    match,
)
from detection_eval.pipeline_monitor import SENSORS, make_monitor
from detection_eval.tables import text_table

START = 1_700_000_000.0  # a fixed epoch: the same seed must give the same readings
INTERVAL = 1.0
BATCH_SECONDS = 60.0
ALL_FAULTS_ARG = "overload,spike,bearing,drift,stuck"


def parse_faults(text: str) -> tuple[str, ...]:
    """Fault kinds from `overload,spike,...`, checked against the simulator's kinds."""
    from machine_simulator.signals import check_kind

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds:
        raise ValueError("no fault kinds given")
    return tuple(check_kind(k) for k in kinds)


@dataclass(frozen=True)
class SimulatorReport:
    """The settings of a run, its faults, its episodes and how they matched."""

    minutes: float
    machines: int
    seed: int | list[int]  # several when pooled
    detector: str  # the name asked for: upstream, default, or a configuration's name
    monitor: str  # what ran under that name
    grace: float
    faults: list[Fault]
    episodes: list[AlertedSpan]
    result: MatchResult
    scenario: str = "standard"
    outages: int = 0

    def as_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "minutes": self.minutes,
            "machines": self.machines,
            "seed": self.seed,
            "outages": self.outages,
            "detector": self.detector,
            "monitor": self.monitor,
            "grace_s": self.grace,
            **self.result.as_dict(),
            "faults": [vars(f) for f in self.faults],
            "false_episode_examples": [vars(e) for e in self.result.false_examples],
        }


def simulate_readings(
    machine_ids: Sequence[str],
    seed: int,
    faults: Sequence[Fault],
    count: int,
    outages: Sequence = (),
    pattern=None,
) -> pd.DataFrame:
    """Every machine's readings, fast-forwarded, with the fault active at each (ground truth);
    a stopped machine (`outages`) has no readings."""
    from machine_simulator.signals import FaultSchedule, FaultWindow, Fleet, simulate

    schedule = FaultSchedule(FaultWindow(f.machine_id, f.kind, f.start, f.end) for f in faults)
    fleet = Fleet(list(machine_ids), seed=seed, schedule=schedule, pattern=pattern, outages=outages)
    rows = [
        (r.machine_id, r.time, r.temperature, r.load, r.power, r.vibration, r.fault)
        for readings in simulate(fleet, START, INTERVAL, count)
        for r in readings
    ]
    return pd.DataFrame(rows, columns=["machine_id", "time", *SENSORS, "fault"])


def evaluate(
    minutes: float,
    faults: Sequence[str],
    machines: int = 3,
    seed: int = 42,
    detector: str = "default",
    grace: float = DEFAULT_GRACE_SECONDS,
    scenario: str = "standard",
) -> SimulatorReport:
    """Run a scenario's scripted schedule through the monitor and match its episodes to the
    faults."""
    if minutes <= 0 or machines < 1:
        raise ValueError("minutes must be > 0 and machines >= 1")
    machine_ids = [f"machine{i}" for i in range(1, machines + 1)]
    count = int(minutes * 60 / INTERVAL)
    plan = scenarios.build(scenario, machine_ids, seed, START, count * INTERVAL, faults, grace)
    script = plan.faults
    readings = simulate_readings(machine_ids, seed, script, count, plan.outages, plan.pattern)
    monitor = make_monitor(detector)
    episodes: list[AlertedSpan] = []
    batch_of = ((readings["time"] - START) // BATCH_SECONDS).astype(int)
    for _, batch in readings.groupby(batch_of, sort=True):
        episodes.extend(monitor.process(batch.drop(columns="fault")))
    episodes.extend(monitor.finish())
    result = match(
        script,
        episodes,
        machine_seconds=machines * count * INTERVAL,
        grace=grace,
        kinds_order=faults,
    )
    return SimulatorReport(
        minutes=minutes,
        machines=machines,
        seed=seed,
        detector=monitor.detector,
        monitor=monitor.name,
        grace=grace,
        faults=list(script),
        episodes=episodes,
        result=result,
        scenario=scenario,
        outages=len(plan.outages),
    )


def _evaluate(kwargs: dict) -> SimulatorReport:
    return evaluate(**kwargs)


def evaluate_many(runs: Sequence[dict], jobs: int | None = None) -> list[SimulatorReport]:
    """`evaluate(**run)` for each run, in a process pool of `jobs` workers (one per core)."""
    jobs = jobs or min(len(runs), os.cpu_count() or 1)
    if jobs <= 1 or len(runs) <= 1:
        return [evaluate(**run) for run in runs]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_evaluate, runs))


def pooled(reports: Sequence[SimulatorReport]) -> SimulatorReport:
    """One report from several seeds' runs of the same scenario and detector: fault events,
    detections, latencies, episodes and machine-days added up."""
    first = reports[0]
    if len(reports) == 1:
        return first
    kinds: dict[str, KindResult] = {}
    for report in reports:
        for kind, k in report.result.kinds.items():
            total = kinds.setdefault(kind, KindResult(kind))
            total.events += k.events
            total.detected += k.detected
            total.latencies.extend(k.latencies)
            total.episodes += k.episodes
    result = MatchResult(
        kinds=kinds,
        false_episodes=sum(r.result.false_episodes for r in reports),
        total_episodes=sum(r.result.total_episodes for r in reports),
        machine_days=sum(r.result.machine_days for r in reports),
        false_examples=[e for r in reports for e in r.result.false_examples][:20],
    )
    return replace(
        first,
        seed=[r.seed for r in reports],
        faults=[f for r in reports for f in r.faults],
        episodes=[e for r in reports for e in r.episodes],
        result=result,
        outages=sum(r.outages for r in reports),
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_report(report: SimulatorReport) -> str:
    """The table: per fault kind recall and latency, then false episodes and precision."""
    r = report.result
    lines = [
        f"Simulator, scenario {report.scenario}: {report.machines} machines x "
        f"{report.minutes:g} min, seed {report.seed}, detector {report.detector}: "
        f"{report.monitor}",
        f"{'fault':<10} {'events':>6} {'found':>6} {'recall':>7} {'median s':>9} {'p95 s':>7}",
    ]
    for kind, k in r.kinds.items():
        recall = "-" if k.recall is None else f"{100 * k.recall:.0f}%"
        lines.append(
            f"{kind:<10} {k.events:>6} {k.detected:>6} {recall:>7} "
            f"{_seconds(k.latency(0.5)):>9} {_seconds(k.latency(0.95)):>7}"
        )
    precision = "-" if r.precision is None else f"{100 * r.precision:.0f}%"
    lines.append(
        f"episodes {r.total_episodes}, false {r.false_episodes} "
        f"({r.false_per_machine_day:.1f} per machine-day), precision {precision}"
    )
    return "\n".join(lines)


def format_comparison(reports: Sequence[SimulatorReport]) -> str:
    """One row per scenario and detector: recall and median latency per fault kind, false
    episodes (count and per machine-day), precision."""
    kinds = list(reports[0].result.kinds) if reports else []
    rows = []
    for report in reports:
        r = report.result
        cells = []
        for kind in kinds:
            k = r.kinds.get(kind, KindResult(kind))
            recall = "-" if k.recall is None else f"{100 * k.recall:.0f}%"
            cells.append(f"{recall} / {_seconds(k.latency(0.5))}")
        precision = "-" if r.precision is None else f"{100 * r.precision:.0f}%"
        rows.append(
            (
                f"{report.scenario}: {report.detector}",
                [*cells, f"{r.false_episodes} ({r.false_per_machine_day:.1f})", precision],
            )
        )
    columns = [f"{kind} rec/med s" for kind in kinds] + ["false (per m-day)", "precision"]
    return text_table("scenario: detector", columns, rows)
