"""The one place operator decisions meet the pipeline's alerts: events in; events to send,
muted and acknowledged out.

The check step calls `screen(events, ...)` after the episode tracker and before delivery:

- an episode that *starts* while its machine is muted (a tool mute, or a window of
  `machines.yaml`) is muted for its whole life: no "Anomaly", no follow-up, no "Resolved";
  it is stored with status `muted` (the detector scored it as usual);
- follow-ups (any event other than "opened" and "resolved", e.g. "still recurring") of an
  acknowledged episode, or of one marked a false alarm, are not sent;
- everything else is sent.

Every episode is also recorded in the operator state (machine, start, peak, lead feature,
muted or not), which is how `ack` and `false-alarm` find an episode by id, and why a run redone
after a failure decides the same way (a muted episode stays muted even once the mute ended).

>>> import pathlib, tempfile
>>> from influx_magic.operations.machines_file import MachinesFile
>>> from influx_magic.operations.operator_store import OperatorStore
>>> event = {"unique_id": "acme-m1", "machine_id": "m1", "provider": "ACME",
...          "episode_id": "e1", "kind": "opened", "start": "2025-06-02T08:00:00Z",
...          "peak_score": 0.9, "top_features": [["load", 7.0]]}
>>> store = OperatorStore(pathlib.Path(tempfile.mkdtemp()))
>>> result = screen([event], store, MachinesFile("none"))
>>> len(result.send), result.muted, store.read().episodes["e1"].lead
(1, [], 'load')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from influx_magic.operations.machine_names import MachineIdentity
from influx_magic.operations.machines_file import MachinesFile
from influx_magic.operations.operator_store import (
    EpisodeRecord,
    OperatorState,
    OperatorStore,
)
from influx_magic.operations.policy import mutes_at

MUTED = "muted"
PLAIN_KINDS = ("opened", "resolved")


@dataclass
class Screened:
    """What `screen` decided: events to send, and those held back with why."""

    send: list[Any] = field(default_factory=list)
    muted: list[Any] = field(default_factory=list)  # their episodes are stored as muted
    acknowledged: list[Any] = field(default_factory=list)  # follow-ups nobody needs
    mute_reasons: dict[str, str] = field(default_factory=dict)  # episode id -> why

    def summary(self) -> str:
        """For the check step's log line: `2 muted (machine2: maintenance), 1 acknowledged`."""
        parts = []
        if self.muted:
            machines = sorted({_get(e, "machine_id") for e in self.muted})
            parts.append(f"{len(self.muted)} muted ({', '.join(machines)})")
        if self.acknowledged:
            parts.append(f"{len(self.acknowledged)} follow-up(s) of acknowledged episodes")
        return "; ".join(parts)


def _get(event: Any, name: str) -> Any:
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


def _when(value: Any) -> datetime:
    moment = pd.Timestamp(value)
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    return moment.to_pydatetime()


def _lead(event: Any) -> str | None:
    """The feature that deviated most at the episode's peak (first of `top_features`)."""
    ranked: Sequence[Any] = _get(event, "top_features") or ()
    if not ranked:
        return None
    first = ranked[0]
    return str(first[0] if isinstance(first, list | tuple) else first)


def _identity(event: Any) -> MachineIdentity:
    uid = str(_get(event, "unique_id"))
    return MachineIdentity(
        uid, str(_get(event, "machine_id") or uid), str(_get(event, "provider") or "")
    )


def screen(
    events: Iterable[Any],
    store: OperatorStore,
    machines_file: MachinesFile,
    now: datetime | None = None,
) -> Screened:
    """Decide for each event (see the module doc) and record the episodes; `now` only prunes
    the record of old episodes (default: the latest event's time)."""
    events = list(events)
    with store.change() as state:
        result = decide(events, state, machines_file)
        if events and now is None:
            now = max(_when(_get(e, "end") or _get(e, "start")) for e in events)
        if now is not None:
            state.prune(now)
    return result


def decide(events: Iterable[Any], state: OperatorState, machines_file: MachinesFile) -> Screened:
    """`screen` on an operator state in memory (recording the episodes in it, not on disk):
    what a replay uses to tell which of its alerts would have gone out."""
    result = Screened()
    for event in events:
        _decide(event, state, machines_file, result)
    return result


def _decide(
    event: Any, state: OperatorState, machines_file: MachinesFile, result: Screened
) -> None:
    episode_id = str(_get(event, "episode_id"))
    kind = str(_get(event, "kind"))
    who = _identity(event)
    start = _when(_get(event, "start"))
    record = state.episodes.get(episode_id)
    if record is None:
        mutes = mutes_at(who, start, state, machines_file)
        reason = "; ".join(f"{m.reason} ({m.source})" for m in mutes) or None
        record = EpisodeRecord(
            episode_id=episode_id,
            unique_id=who.unique_id,
            machine_id=who.machine_id,
            provider=who.provider,
            start=start.isoformat(),
            peak_score=float(_get(event, "peak_score") or 0.0),
            lead=_lead(event),
            status="open",
            muted=reason,
        )
        state.episodes[episode_id] = record
    record.peak_score = max(record.peak_score, float(_get(event, "peak_score") or 0.0))
    record.lead = _lead(event) or record.lead
    if kind == "resolved":
        record.status = "resolved"
    record.seen = _when(_get(event, "end") or _get(event, "start")).isoformat()
    if record.muted:
        result.muted.append(event)
        result.mute_reasons[episode_id] = record.muted
    elif kind not in PLAIN_KINDS and episode_id in state.acks:
        result.acknowledged.append(event)
    else:
        result.send.append(event)
