"""Episodes against ground-truth faults: recall, latency, false episodes, precision.

An episode belongs to a fault on the same machine when it starts while the fault is on or
within `grace` seconds after it ends (a machine settling back, e.g. temperature cooling with its
45 s lag, is the fault's doing, not a false alarm). A fault is detected when one of its episodes
opens; its latency is the time from the fault's start to the alert (the episode's `opened_at`,
when the pipeline would tell Slack). An episode already open when a fault starts does not count
for that fault: its alert was about something else. Everything else is a false episode.

>>> faults = [Fault("m1", "overload", 100.0, 400.0)]
>>> episodes = [AlertedSpan("m1", 50.0, 52.0), AlertedSpan("m1", 110.0, 125.0), AlertedSpan("m1", 420.0, 421.0)]
>>> result = match(faults, episodes, machine_seconds=86400.0, grace=60.0)
>>> result.kinds["overload"].latencies, result.false_episodes, result.precision
([25.0], 1, 0.6666666666666666)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_GRACE_SECONDS = 300.0


@dataclass(frozen=True)
class Fault:
    """A fault that really happened: `kind` on `machine_id` from `start` to `end` (seconds)."""

    machine_id: str
    kind: str
    start: float
    end: float


@dataclass(frozen=True)
class AlertedSpan:
    """An episode the pipeline reported: first anomalous reading and the moment it alerted."""

    machine_id: str
    start: float
    opened_at: float
    end: float | None = None


@dataclass
class KindResult:
    """How one fault kind fared."""

    kind: str
    events: int = 0
    detected: int = 0
    latencies: list[float] = field(default_factory=list)
    episodes: int = 0

    @property
    def recall(self) -> float | None:
        return self.detected / self.events if self.events else None

    def latency(self, quantile: float) -> float | None:
        return float(np.quantile(self.latencies, quantile)) if self.latencies else None

    def as_dict(self) -> dict:
        return {
            "events": self.events,
            "detected": self.detected,
            "recall": self.recall,
            "latency_median_s": self.latency(0.5),
            "latency_p95_s": self.latency(0.95),
            "episodes": self.episodes,
        }


@dataclass
class MatchResult:
    """Per-kind results and the fleet-wide false-episode figures."""

    kinds: dict[str, KindResult]
    false_episodes: int
    total_episodes: int
    machine_days: float
    false_examples: list[AlertedSpan] = field(default_factory=list)

    @property
    def false_per_machine_day(self) -> float:
        return self.false_episodes / self.machine_days if self.machine_days else 0.0

    @property
    def precision(self) -> float | None:
        if not self.total_episodes:
            return None
        return (self.total_episodes - self.false_episodes) / self.total_episodes

    def as_dict(self) -> dict:
        return {
            "kinds": {kind: result.as_dict() for kind, result in self.kinds.items()},
            "episodes": self.total_episodes,
            "false_episodes": self.false_episodes,
            "machine_days": self.machine_days,
            "false_episodes_per_machine_day": self.false_per_machine_day,
            "precision": self.precision,
        }


def match(
    faults: Sequence[Fault],
    episodes: Sequence[AlertedSpan],
    machine_seconds: float,
    grace: float = DEFAULT_GRACE_SECONDS,
    kinds_order: Sequence[str] = (),
) -> MatchResult:
    """Attribute each episode to at most one fault and score both sides.

    `kinds_order` lists kinds to report first (and even when none of them was injected).
    """
    kinds = {kind: KindResult(kind) for kind in kinds_order}
    for fault in faults:
        kinds.setdefault(fault.kind, KindResult(fault.kind)).events += 1
    first_alert: dict[int, float] = {}
    false: list[AlertedSpan] = []
    for episode in sorted(episodes, key=lambda e: (e.machine_id, e.start)):
        # The latest fault started by then, so a settling machine's grace period never steals
        # an episode from the next fault.
        candidates = [
            index
            for index, fault in enumerate(faults)
            if fault.machine_id == episode.machine_id
            and fault.start <= episode.start <= fault.end + grace
        ]
        owner = max(candidates, key=lambda index: faults[index].start, default=None)
        if owner is None:
            false.append(episode)
            continue
        kinds[faults[owner].kind].episodes += 1
        if owner not in first_alert or episode.opened_at < first_alert[owner]:
            first_alert[owner] = episode.opened_at
    for index, opened_at in first_alert.items():
        fault = faults[index]
        kinds[fault.kind].detected += 1
        kinds[fault.kind].latencies.append(opened_at - fault.start)
    return MatchResult(
        kinds=kinds,
        false_episodes=len(false),
        total_episodes=len(episodes),
        machine_days=machine_seconds / 86400.0,
        false_examples=false[:20],
    )
