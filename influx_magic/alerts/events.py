"""An alert: the episode tracker's event, carried unchanged, and who the machine is.

Kinds: "opened" (the alert), "recurring" (a follow-up while bursts go on) and "resolved".

The detection core's `EpisodeEvent` knows a machine by its series key (`unique_id`) and times
as nanoseconds of data time. A message also needs the machine's own id and provider, and the
threshold the scores were held against; `Alert` adds exactly those and derives the rest from
the event (timezone-aware UTC times, the features that moved with their deviations), so every
output renders the same facts. `to_json` / `from_json` carry an alert between pipeline steps.

>>> from fleetwatch.episodes import Episode, EpisodeEvent
>>> start = 1714557600_000_000_000  # 2024-05-01 10:00 UTC
>>> episode = Episode("acme-machine2", "ep-1", start, start, 0.93, start,
...                   {"load": 200.0}, {"load": 4.2}, ["load"])
>>> alert = Alert(EpisodeEvent("opened", start, episode), "machine2", "Acme", 0.8)
>>> alert.key, alert.start.isoformat(), alert.top_features
('ep-1:opened', '2024-05-01T10:00:00+00:00', (('load', 4.2),))
>>> Alert.from_json(alert.to_json()) == alert
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import pandas as pd

from fleetwatch.episodes import EVENT_KINDS, EpisodeEvent
from influx_magic.checks.findings import CheckEvent

EventKind = Literal["opened", "recurring", "resolved"]
KINDS: tuple[str, ...] = EVENT_KINDS


class _EventFacts:
    """What every alert reads the same way from its `event` (a detector's `EpisodeEvent` or a
    check's `CheckEvent`): kind, episode id, due time, start, end and bursts, in UTC."""

    event: Any

    def __post_init__(self) -> None:
        if self.event.kind not in KINDS:
            raise ValueError(f"an alert is one of {KINDS}, not {self.event.kind!r}")

    @property
    def kind(self) -> EventKind:
        return self.event.kind  # type: ignore[no-any-return]

    @property
    def episode_id(self) -> str:
        return self.event.episode.episode_id

    @property
    def time(self) -> datetime:
        """When the event became due: the start, a burst or the resolution (data time; for a
        window test or SQL check, the evaluation)."""
        return to_utc(self.event.time)

    @property
    def start(self) -> datetime:
        return to_utc(self.event.episode.start)

    @property
    def end(self) -> datetime | None:
        """The last anomalous point or the last time the finding held, once resolved (None
        while it is open)."""
        return None if self.kind == "opened" else to_utc(self.event.episode.end)

    @property
    def bursts(self) -> int:
        """Times the anomaly or the finding began again in this episode."""
        return int(self.event.episode.bursts)


@dataclasses.dataclass(frozen=True)
class Alert(_EventFacts):
    """An episode that opened or resolved, with what an operator needs to act on it."""

    event: EpisodeEvent
    machine_id: str
    provider: str | None = None
    threshold: float | None = None

    @property
    def unique_id(self) -> str:
        return self.event.episode.machine

    @property
    def key(self) -> str:
        """The idempotency key: one delivery per episode and kind (and follow-up)."""
        if self.kind == "recurring":
            return f"{self.episode_id}:recurring:{self.event.episode.follow_ups}"
        return f"{self.episode_id}:{self.kind}"

    @property
    def delayed(self) -> bool:
        """An alert the cooldown held back."""
        return self.event.delayed

    @property
    def peak_score(self) -> float:
        return float(self.event.episode.peak_score)

    @property
    def peak_values(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.event.episode.peak_values.items()}

    @property
    def top_features(self) -> tuple[tuple[str, float | None], ...]:
        """`(feature, deviation)` pairs, most deviating first (None: not a finite number)."""
        deviations = self.event.episode.deviations
        return tuple(
            (name, _finite(deviations.get(name))) for name in self.event.episode.top_features
        )

    @property
    def moved(self) -> tuple[str, ...]:
        """The top features at the peak in words ("temperature 7.2 deviations above its usual
        level for this load"); empty when the detector gave none."""
        return tuple(self.event.episode.moved)

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event.to_dict(),
            "machine_id": self.machine_id,
            "provider": self.provider,
            "threshold": self.threshold,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            EpisodeEvent.from_dict(data["event"]),
            str(data["machine_id"]),
            data.get("provider"),
            data.get("threshold"),
        )


@dataclasses.dataclass(frozen=True)
class CheckAlert(_EventFacts):
    """A declared check's finding that opened, recurred or resolved (`influx_magic.checks`):
    the same facts a detector's `Alert` gives every output (machine, episode, kind, times),
    plus the check's name and kind, its one-line `summary` and the numbers that decided it
    (`details`).

    >>> from influx_magic.checks.findings import CheckEpisode, CheckEvent
    >>> t = 1714557600_000_000_000
    >>> episode = CheckEpisode("overload", "limit", "acme-machine2", "machine2", "Acme", "c-1",
    ...     t, t, 200.0, "load above 150 for 30s: highest 200 %")
    >>> alert = CheckAlert(CheckEvent("opened", t, episode))
    >>> alert.key, alert.check, alert.machine_id
    ('c-1:opened', 'overload', 'machine2')
    """

    event: CheckEvent

    @property
    def unique_id(self) -> str:
        return self.event.episode.unique_id

    @property
    def machine_id(self) -> str:
        return self.event.episode.machine_id

    @property
    def provider(self) -> str | None:
        return self.event.episode.provider

    @property
    def key(self) -> str:
        """The idempotency key: one delivery per episode and kind."""
        return self.event.key

    @property
    def check(self) -> str:
        return self.event.episode.check

    @property
    def check_kind(self) -> str:
        return self.event.episode.check_kind

    @property
    def summary(self) -> str:
        return self.event.episode.summary

    @property
    def resolution(self) -> str | None:
        return self.event.episode.resolution


def to_utc(value: Any) -> datetime:
    """A timezone-aware UTC datetime; naive values are taken as UTC (InfluxDB's convention),
    integers as nanoseconds since the epoch.

    >>> to_utc(1714557600_000_000_000).isoformat()
    '2024-05-01T10:00:00+00:00'
    >>> to_utc("2024-05-01 12:00:00+02:00").isoformat()
    '2024-05-01T10:00:00+00:00'
    """
    if isinstance(value, bool):
        raise TypeError(f"not a time: {value!r}")
    moment = pd.Timestamp(value)
    if moment is pd.NaT:
        raise TypeError(f"not a time: {value!r}")
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    return moment.to_pydatetime(warn=False)  # Slack shows seconds; nanoseconds don't matter


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None
