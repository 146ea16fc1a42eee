"""A check's findings as episodes: per machine open or closed; "opened", "recurring", "resolved".

Each check keeps, per machine, whether a finding is open (`CheckState.open`) and what it needs
to judge the next run (`CheckState.memory`: the limit's streak, the last reading seen, ...).
Findings are stories like the detector's episodes (`fleetwatch.episodes`): a finding that stops
holding is *quiet*, and resolves once it has stayed quiet for the recur gap
(`ALERT_RECUR_GAP_MIN`); one that holds again before that is another burst of the same episode,
announced by at most one "recurring" follow-up per hour. The events are
`CheckEvent("opened" | "recurring" | "resolved", time, episode)`, each with a snapshot of the
episode.

The state of every check travels as JSON (`ChecksState.to_json`) inside the detector's state
file (`FleetState.extra["checks"]`), so it is committed with the run, all or nothing: a run
that fails leaves the checks where they were, and the redone run finds the same episodes.

Episode ids are stable across a redone run: a limit's or no_data's episode is named by its
check, machine and first offending reading (data time); a window test's or SQL check's by its
check, machine and the evaluation it followed (the committed `evaluated_at`), since those
judge a window that moves with the clock.

>>> state = CheckState("limit", "load above 150")
>>> events = []
>>> episode = state.open_episode(CheckEpisode("overload", "limit", "acme-m2", "m2", "Acme",
...     state.episode_id("acme-m2", 10), 10, 10, 200.0, "load 200 %", {}), events)
>>> state.ease("acme-m2", 20, "within the limit")
>>> state.settle(25, gap=10, events=events)  # quiet for less than the gap: still open
>>> state.settle(30, gap=10, events=events)
>>> [(e.kind, e.time) for e in events], state.open
([('opened', 10), ('resolved', 20)], {})
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd
from slugify import slugify

FORMAT_VERSION = 1


def series_key(machine_id: str, provider: str | None) -> str:
    """The machine's `unique_id`, as the detector keys it: `slugify(provider)-machineID`.

    >>> series_key("machine2", "Nordhoff, Weiss & Partner")
    'nordhoff-weiss-partner-machine2'
    """
    return f"{slugify(provider)}-{machine_id}" if provider else str(machine_id)


def check_episode_id(definition: str, unique_id: str, anchor: int) -> str:
    """Stable id of a check's episode: the check as declared, the machine, and a time that a
    redone run sees again (see the module doc). An edited check names its episodes anew; never
    equal to a detector episode's id (other input)."""
    text = f"check\x00{definition}\x00{unique_id}\x00{anchor}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CheckEpisode:
    """One finding of one check on one machine. Times are nanoseconds since the epoch.

    `value` is the number that matters most (the limit's worst reading, the window test's z,
    the seconds without data, the SQL check's latest value); `summary` says it in one line;
    `details` holds every number that decided it (a window test's formula and its values).
    """

    check: str
    check_kind: str
    unique_id: str
    machine_id: str
    provider: str | None
    episode_id: str
    start: int
    end: int  # the last time the finding held
    value: float | None
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    bursts: int = 1  # times the finding began to hold
    quiet_since: int | None = None  # when it stopped holding (None while it holds)
    follow_ups: int = 0  # "recurring" events
    last_message: int | None = None  # time of the last "opened" or "recurring" event
    resolved_at: int | None = None
    resolution: str | None = None

    @property
    def start_time(self) -> pd.Timestamp:
        return pd.Timestamp(self.start, tz="UTC")

    @property
    def end_time(self) -> pd.Timestamp:
        return pd.Timestamp(self.end, tz="UTC")


@dataclass(frozen=True)
class CheckEvent:
    """A finding that opened, held again ("recurring") or resolved, at `time` (ns); `episode`
    is a snapshot."""

    kind: Literal["opened", "recurring", "resolved"]
    time: int
    episode: CheckEpisode

    @property
    def key(self) -> str:
        """The alert's idempotency key, as for the detector's episodes."""
        if self.kind == "recurring":
            return f"{self.episode.episode_id}:recurring:{self.episode.follow_ups}"
        return f"{self.episode.episode_id}:{self.kind}"


@dataclass
class CheckState:
    """One check's open findings and memory, keyed by machine `unique_id`."""

    kind: str
    definition: str  # the check as declared, to tell when its file entry changed
    evaluated_at: int | None = None  # `now` of the last committed evaluation (ns)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    open: dict[str, CheckEpisode] = field(default_factory=dict)
    last_error: str | None = None

    def episode_id(self, unique_id: str, anchor: int) -> str:
        """The id of this check's episode on `unique_id` anchored at `anchor` (ns)."""
        return check_episode_id(self.definition, unique_id, anchor)

    def open_episode(self, episode: CheckEpisode, events: list[CheckEvent]) -> CheckEpisode:
        """Open `episode` for its machine (which has none open) and record the event, at the
        episode's `end` (when the finding was found to hold)."""
        if episode.unique_id in self.open:
            raise ValueError(f"{episode.check}: {episode.unique_id} already has an open finding")
        episode.last_message = episode.end
        self.open[episode.unique_id] = episode
        events.append(CheckEvent("opened", episode.end, copy.deepcopy(episode)))
        return episode

    def holding(self, unique_id: str) -> CheckEpisode | None:
        """The machine's open finding while it holds (None when there is none, or it is quiet)."""
        episode = self.open.get(unique_id)
        return episode if episode is not None and episode.quiet_since is None else None

    def hold(
        self, unique_id: str, at: int, events: list[CheckEvent], follow_up: int
    ) -> CheckEpisode:
        """The machine's open finding holds again at `at`: when it was quiet, that is another
        burst, announced by a "recurring" event unless one was sent less than `follow_up` ns
        before. The episode, for the caller to update."""
        episode = self.open[unique_id]
        if episode.quiet_since is not None:
            episode.quiet_since, episode.resolution = None, None
            episode.bursts += 1
            if episode.last_message is None or at - episode.last_message >= follow_up:
                episode.follow_ups += 1
                episode.last_message = at
                events.append(CheckEvent("recurring", at, copy.deepcopy(episode)))
        return episode

    def ease(self, unique_id: str, at: int, how: str) -> None:
        """The machine's finding stopped holding at `at` (ns), for the reason `how`: it
        resolves once quiet for the recur gap (`settle`), unless it holds again before."""
        episode = self.open[unique_id]
        if episode.quiet_since is None:
            episode.quiet_since, episode.resolution = at, how

    def settle(self, now: int, gap: int, events: list[CheckEvent]) -> None:
        """Resolve the findings quiet for `gap` ns by `now` (see `settle_one`)."""
        for unique_id in sorted(self.open):
            self.settle_one(unique_id, now, gap, events)

    def settle_one(self, unique_id: str, now: int, gap: int, events: list[CheckEvent]) -> None:
        """Resolve the machine's finding if it has been quiet for `gap` ns by `now`: at the
        later of when it stopped holding and `gap` after it last held."""
        episode = self.open.get(unique_id)
        if episode is None or episode.quiet_since is None:
            return
        due = max(episode.quiet_since, episode.end + gap)
        if now >= due:
            self.resolve(unique_id, due, episode.resolution or "quiet", events)

    def resolve(self, unique_id: str, at: int, how: str, events: list[CheckEvent]) -> None:
        """Close the machine's open finding at `at` (ns) now, saying why."""
        episode = self.open.pop(unique_id)
        episode.resolved_at, episode.resolution = at, how
        events.append(CheckEvent("resolved", at, copy.deepcopy(episode)))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "definition": self.definition,
            "evaluated_at": self.evaluated_at,
            "memory": self.memory,
            "open": [asdict(episode) for episode in self.open.values()],
            "last_error": self.last_error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckState:
        episodes = [CheckEpisode(**item) for item in data.get("open", [])]
        return cls(
            kind=str(data["kind"]),
            definition=str(data["definition"]),
            evaluated_at=data.get("evaluated_at"),
            memory={str(k): dict(v) for k, v in dict(data.get("memory") or {}).items()},
            open={episode.unique_id: episode for episode in episodes},
            last_error=data.get("last_error"),
        )


@dataclass
class ChecksState:
    """Every check's state by check name (JSON in `FleetState.extra["checks"]`)."""

    checks: dict[str, CheckState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "checks": {name: state.to_json() for name, state in sorted(self.checks.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ChecksState:
        """From `to_json`'s output; None or an empty mapping is a state with no checks."""
        if not data:
            return cls()
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"the checks' state has version {data.get('version')!r}, expected {FORMAT_VERSION}"
            )
        return cls({name: CheckState.from_json(item) for name, item in data["checks"].items()})
