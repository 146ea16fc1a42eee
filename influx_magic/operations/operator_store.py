"""What operators said, kept beside the detector state: mutes, acknowledgements, false alarms,
the episodes the pipeline saw, and the log of every action.

One JSON file, `$FLEETWATCH_STATE_DIR/operator/operator.json`, replaced atomically
(`magic_common.atomic`): a crash leaves the old file or the new one. The command-line tool and
the pipeline both change it, each under an exclusive `flock` on `operator.lock` held for the
read-modify-write only (milliseconds), so neither loses the other's change.

Every action (mute, unmute, ack, false_alarm) is logged with when, who (`$USER`) and why, and
waits in the log as unwritten until it is in InfluxDB's `anomaly_feedback` table: the tool
writes it at once when InfluxDB answers, else the next pipeline run does. The action takes
effect from the file either way.

>>> import tempfile
>>> store = OperatorStore(Path(tempfile.mkdtemp()))
>>> who = MachineIdentity("acme-m1", "m1", "ACME")
>>> now = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
>>> with store.change() as state:
...     action = state.mute(who, now + timedelta(hours=2), "oil change", "ana", now)
>>> [m.reason for m in store.read().mutes_at("acme-m1", now + timedelta(hours=1))]
['oil change']
>>> store.read().mutes_at("acme-m1", now + timedelta(hours=3))
[]
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetwatch.feedback import FalseAlarmRaise
from influx_magic.operations.machine_names import MachineIdentity
from magic_common.atomic import write_atomically

FOLDER = "operator"
FILENAME = "operator.json"
LOCK = "operator.lock"
VERSION = 1
# A mute also covers episodes that started up to this long before it was given: their data
# arrives late and the run that would alert them comes after the mute.
MUTE_LOOKBEHIND = timedelta(minutes=5)
KEEP_EPISODES = timedelta(days=30)  # the episode index (for ack / false-alarm by id)
KEEP_WRITTEN_ACTIONS = 1000  # the local log; InfluxDB's anomaly_feedback keeps all


class OperatorStateError(RuntimeError):
    """The operator file cannot be read or an action cannot apply; the message says why."""


def who_is_acting() -> str:
    """Who an action is recorded for: `$USER` (as the issue's operators asked), else `unknown`."""
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass
class Action:
    """One operator action, as logged and as written to `anomaly_feedback`."""

    id: str
    at: str
    who: str
    action: str  # mute, unmute, ack, false_alarm
    unique_id: str
    machine_id: str
    provider: str
    reason: str = ""
    episode_id: str | None = None
    until: str | None = None
    feature: str | None = None
    threshold_raise: float | None = None
    written: bool = False


@dataclass
class Mute:
    """A mute given with the tool: the machine's episodes in `[since - lookbehind, until)` are
    stored as muted and not alerted."""

    unique_id: str
    since: str
    until: str
    reason: str
    who: str
    action_id: str

    def covers(self, moment: datetime) -> bool:
        return _time(self.since) - MUTE_LOOKBEHIND <= moment < _time(self.until)


@dataclass
class FalseAlarm:
    episode_id: str
    unique_id: str
    feature: str | None
    amount: float
    at: str
    action_id: str

    def as_raise(self) -> FalseAlarmRaise:
        return FalseAlarmRaise(
            self.unique_id, self.feature, self.amount, _time(self.at).timestamp()
        )


@dataclass
class EpisodeRecord:
    """An episode the pipeline saw, and what the operator side decided about it."""

    episode_id: str
    unique_id: str
    machine_id: str
    provider: str
    start: str
    peak_score: float
    lead: str | None
    status: str  # open, resolved
    muted: str | None = None  # why, when the episode was muted at its start
    seen: str = ""  # when the pipeline last reported it (for pruning)


@dataclass
class OperatorState:
    """The file's content (see the module doc)."""

    mutes: list[Mute] = field(default_factory=list)
    acks: dict[str, str] = field(default_factory=dict)  # episode id -> action id
    false_alarms: list[FalseAlarm] = field(default_factory=list)
    episodes: dict[str, EpisodeRecord] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)

    # -- reading -------------------------------------------------------------------------

    def mutes_at(self, unique_id: str, moment: datetime) -> list[Mute]:
        return [m for m in self.mutes if m.unique_id == unique_id and m.covers(moment)]

    def raises(self) -> list[FalseAlarmRaise]:
        return [f.as_raise() for f in self.false_alarms]

    def find_episode(self, text: str) -> EpisodeRecord:
        """The episode `text` names: its id, or a unique prefix of at least 6 characters."""
        text = text.strip()
        if text in self.episodes:
            return self.episodes[text]
        found = [e for i, e in self.episodes.items() if len(text) >= 6 and i.startswith(text)]
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(e.episode_id for e in found)
            raise OperatorStateError(f"{text!r} starts {len(found)} episode ids: {listed}")
        raise OperatorStateError(
            f"no episode {text!r} in the last {KEEP_EPISODES.days} days (the id is in the alert, "
            "in `influx-magic status` and in anomaly_episodes)"
        )

    def unwritten(self) -> list[Action]:
        return [a for a in self.actions if not a.written]

    # -- actions -------------------------------------------------------------------------

    def _log(self, action: str, who: MachineIdentity, by: str, now: datetime, **extra) -> Action:
        entry = Action(
            id=uuid.uuid4().hex[:16],
            at=_iso(now),
            who=by,
            action=action,
            unique_id=who.unique_id,
            machine_id=who.machine_id,
            provider=who.provider,
            **extra,
        )
        self.actions.append(entry)
        return entry

    def mute(
        self, who: MachineIdentity, until: datetime, reason: str, by: str, now: datetime
    ) -> Action:
        if until <= now:
            raise OperatorStateError("a mute must end in the future")
        action = self._log("mute", who, by, now, reason=reason, until=_iso(until))
        self.mutes.append(Mute(who.unique_id, _iso(now), _iso(until), reason, by, action.id))
        return action

    def unmute(self, who: MachineIdentity, reason: str, by: str, now: datetime) -> Action:
        """End the machine's mutes given with the tool (the file's windows stay)."""
        active = [m for m in self.mutes if m.unique_id == who.unique_id and _time(m.until) > now]
        if not active:
            raise OperatorStateError(
                f"{who.label} has no mute given with `influx-magic mute` in force"
            )
        for mute in active:
            mute.until = _iso(max(now, _time(mute.since)))
        return self._log("unmute", who, by, now, reason=reason, until=_iso(now))

    def ack(self, episode: EpisodeRecord, reason: str, by: str, now: datetime) -> Action:
        if episode.episode_id in self.acks:
            raise OperatorStateError(f"episode {episode.episode_id} is already acknowledged")
        action = self._log(
            "ack", _identity(episode), by, now, reason=reason, episode_id=episode.episode_id
        )
        self.acks[episode.episode_id] = action.id
        return action

    def false_alarm(
        self, episode: EpisodeRecord, amount: float, note: str, by: str, now: datetime
    ) -> Action:
        if any(f.episode_id == episode.episode_id for f in self.false_alarms):
            raise OperatorStateError(f"episode {episode.episode_id} is already a false alarm")
        action = self._log(
            "false_alarm",
            _identity(episode),
            by,
            now,
            reason=note,
            episode_id=episode.episode_id,
            feature=episode.lead,
            threshold_raise=amount,
        )
        self.false_alarms.append(
            FalseAlarm(
                episode.episode_id, episode.unique_id, episode.lead, amount, _iso(now), action.id
            )
        )
        self.acks.setdefault(episode.episode_id, action.id)  # no follow-ups either
        return action

    def mark_written(self, ids: set[str]) -> None:
        for action in self.actions:
            if action.id in ids:
                action.written = True

    def prune(self, now: datetime) -> None:
        """Forget what no longer matters: mutes ended a week ago, old episodes, raises that
        faded (after `decay`), the oldest written log entries."""
        self.mutes = [m for m in self.mutes if _time(m.until) > now - timedelta(days=7)]
        cutoff = now - KEEP_EPISODES
        self.episodes = {
            i: e for i, e in self.episodes.items() if not e.seen or _time(e.seen) > cutoff
        }
        written = [a for a in self.actions if a.written]
        drop = {a.id for a in written[: max(0, len(written) - KEEP_WRITTEN_ACTIONS)]}
        self.actions = [a for a in self.actions if a.id not in drop]

    # -- JSON ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "mutes": [asdict(m) for m in self.mutes],
            "acks": self.acks,
            "false_alarms": [asdict(f) for f in self.false_alarms],
            "episodes": [asdict(e) for e in self.episodes.values()],
            "actions": [asdict(a) for a in self.actions],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperatorState:
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}, this code reads {VERSION}")
        return cls(
            mutes=[Mute(**m) for m in data["mutes"]],
            acks={str(k): str(v) for k, v in data["acks"].items()},
            false_alarms=[FalseAlarm(**f) for f in data["false_alarms"]],
            episodes={e["episode_id"]: EpisodeRecord(**e) for e in data["episodes"]},
            actions=[Action(**a) for a in data["actions"]],
        )


def _identity(episode: EpisodeRecord) -> MachineIdentity:
    return MachineIdentity(episode.unique_id, episode.machine_id, episode.provider)


class OperatorStore:
    """The operator file of one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = Path(state_dir) / FOLDER
        self.path = self.folder / FILENAME

    def read(self) -> OperatorState:
        """The current content (empty when nothing was ever recorded)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return OperatorState()
        try:
            return OperatorState.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as error:
            raise OperatorStateError(
                f"{self.path} cannot be read ({error}): it holds every mute, acknowledgement and "
                "false alarm; fix it, or move it away to start with none"
            ) from None

    @contextlib.contextmanager
    def change(self) -> Iterator[OperatorState]:
        """Read, let the caller change, write back atomically; all under the file's lock.
        Nothing is written when the caller raises."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.read()
                yield state
                text = json.dumps(state.to_json(), indent=1, sort_keys=True)
                write_atomically(self.path, text.encode("utf-8"))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
