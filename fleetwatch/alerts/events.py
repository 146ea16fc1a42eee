"""The one shape of an alert event that every output renders.

The episode tracker produces its own event objects; `as_event` accepts those, a dataclass or a
plain mapping with the same field names, so the checker block can hand over whatever it has
without a conversion step. Times become timezone-aware UTC here, once, so every output prints
the same instant whatever the producer used (datetime, pandas Timestamp, ISO text, epoch ns).

>>> event = as_event({
...     "machine_id": "machine2", "unique_id": "acme-machine2", "episode_id": "ep-1",
...     "kind": "opened", "start": "2024-05-01T10:00:00Z", "peak_score": 0.93,
...     "peak_values": {"load": 200}, "top_features": ["load", "power"],
... })
>>> event.key
'ep-1:opened'
>>> event.start.isoformat()
'2024-05-01T10:00:00+00:00'
>>> event.top_features
(('load', None), ('power', None))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

import pandas as pd

EventKind = Literal["opened", "resolved"]
KINDS: tuple[str, ...] = ("opened", "resolved")

_REQUIRED = ("machine_id", "unique_id", "episode_id", "kind", "start", "peak_score")
# The data's own column name for the machine, accepted so a row of the scores frame works too.
_ALIASES = {"machineID": "machine_id"}


class EventError(ValueError):
    """An event that cannot be turned into an alert: names the event and the bad field."""


@dataclasses.dataclass(frozen=True)
class AlertEvent:
    """An episode that opened or resolved, with what an operator needs to act on it.

    `top_features` holds `(feature, deviation)` pairs, most deviating first; the deviation is
    None when the producer only ranked names. `moved` says the same in words ("temperature
    7.2 deviations above its usual level for this load"), when the producer can.
    """

    machine_id: str
    unique_id: str
    episode_id: str
    kind: EventKind
    start: datetime
    peak_score: float
    end: datetime | None = None
    peak_values: Mapping[str, float] = dataclasses.field(default_factory=dict)
    top_features: tuple[tuple[str, float | None], ...] = ()
    provider: str | None = None
    threshold: float | None = None
    moved: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The idempotency key: one delivery per episode and kind."""
        return f"{self.episode_id}:{self.kind}"


def as_event(source: Any) -> AlertEvent:
    """An `AlertEvent` from an AlertEvent, a dataclass, an object with attributes or a mapping.

    Raises `EventError` naming the missing or malformed field, never a bare KeyError.
    """
    if isinstance(source, AlertEvent):
        return source
    fields = _fields_of(source)
    for alias, name in _ALIASES.items():
        if name not in fields and alias in fields:
            fields[name] = fields[alias]
    label = fields.get("episode_id") or fields.get("unique_id") or repr(source)[:80]
    missing = [name for name in _REQUIRED if fields.get(name) in (None, "")]
    if missing:
        raise EventError(f"alert event {label}: missing {', '.join(missing)}")
    kind = str(fields["kind"]).lower()
    if kind not in KINDS:
        raise EventError(f"alert event {label}: kind must be one of {KINDS}, got {kind!r}")
    try:
        return AlertEvent(
            machine_id=str(fields["machine_id"]),
            unique_id=str(fields["unique_id"]),
            episode_id=str(fields["episode_id"]),
            kind=kind,  # type: ignore[arg-type]
            start=to_utc(fields["start"]),
            end=None if _absent(fields.get("end")) else to_utc(fields["end"]),
            peak_score=float(fields["peak_score"]),
            peak_values={
                str(k): float(v) for k, v in dict(fields.get("peak_values") or {}).items()
            },
            top_features=_ranked(fields.get("top_features")),
            provider=None if _absent(fields.get("provider")) else str(fields["provider"]),
            threshold=None if _absent(fields.get("threshold")) else float(fields["threshold"]),
            moved=tuple(str(line) for line in fields.get("moved") or ()),
        )
    except (TypeError, ValueError) as error:
        raise EventError(f"alert event {label}: {error}") from None


def to_utc(value: Any) -> datetime:
    """A timezone-aware UTC datetime; naive values are taken as UTC (InfluxDB's convention).

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


def _fields_of(source: Any) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    if dataclasses.is_dataclass(source) and not isinstance(source, type):
        return {f.name: getattr(source, f.name) for f in dataclasses.fields(source)}
    names = set(_REQUIRED) | {"end", "peak_values", "top_features", "provider", "threshold"}
    names |= {"moved"}
    names |= set(_ALIASES)
    found = {name: getattr(source, name) for name in names if hasattr(source, name)}
    if not found:
        raise EventError(
            f"alert event: expected a mapping or an object with fields, got {source!r}"
        )
    return found


def _absent(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN / NaT
    except (TypeError, ValueError):
        return False


def _ranked(value: Any) -> tuple[tuple[str, float | None], ...]:
    """Feature ranking from names, `(name, deviation)` pairs or a `{name: deviation}` mapping."""
    if value is None:
        return ()
    items: Iterable[Any] = value.items() if isinstance(value, Mapping) else value
    ranked: list[tuple[str, float | None]] = []
    for item in items:
        if isinstance(item, str):
            ranked.append((item, None))
        else:
            name, deviation = item
            ranked.append((str(name), None if _absent(deviation) else float(deviation)))
    return tuple(ranked)
