"""The fleet's status, per machine: what `influx-magic status` prints and the fleet page shows.

For each machine the production pipeline scores (its committed state, every shard's read as
one fleet: `influx_magic.operations.production_state`): the last scored time
and how far that lags behind now, warm-up, the latest score against the machine's threshold
(from `anomaly_scores`), the open episode, the mutes in force and the overrides
(`machines.yaml`, false alarms). The state and the operator files are read without a lock:
both are replaced atomically, so a read sees one whole version.

Each machine gets one word for its state, most urgent first: `anomaly` (an episode is open and
alerted), `muted` (a mute is in force, or the open episode is muted), `lagging` (no data scored
for `LAG_LIMIT`), `warming up` (its model's first window is not full: it cannot alert yet),
`ok`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fleetwatch.machine_rules import MachineRule
from fleetwatch.state import FleetState
from influx_magic.influx import (
    SCORES_TABLE,
    InfluxError,
    InfluxNotFound,
    InfluxSettings,
    connect,
    query_table,
    sql_ident,
    time_param,
)
from influx_magic.operations.machine_names import MachineIdentity, identities_from_state
from influx_magic.operations.policy import OperatorPolicy
from influx_magic.operations.production_state import load_production
from influx_magic.telemetry import unique_ids
from magic_common.durations import format_duration

LAG_LIMIT = timedelta(minutes=3)  # two scheduled runs and the lateness allowance
LATEST_WINDOW = timedelta(minutes=15)  # how far back the latest score is looked for
HISTORY = timedelta(hours=1)  # what the page charts
HISTORY_BIN = "10 seconds"  # one chart point per bin: the highest score in it


@dataclass
class MachineStatus:
    """One machine's row (times are UTC)."""

    unique_id: str
    machine_id: str
    provider: str
    state: str
    last_scored: datetime | None
    lag_seconds: float | None
    warm: bool
    window_fill: int
    window_size: int
    threshold: float
    persistence: int
    feature_thresholds: dict[str, float]
    latest_score: float | None = None
    latest_time: datetime | None = None
    open_episode: str | None = None
    episode_since: datetime | None = None
    episode_note: str | None = None  # "acknowledged by ana", "false alarm by ana", "muted"
    muted_until: datetime | None = None
    mute_reason: str | None = None
    overrides: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name, value in data.items():
            if isinstance(value, datetime):
                data[name] = value.isoformat()
        return data


@dataclass
class FleetStatus:
    """Every machine's row, when it was taken, and notes (e.g. InfluxDB did not answer)."""

    now: datetime
    state_path: Path
    machines: list[MachineStatus]
    notes: list[str] = field(default_factory=list)
    source: str = ""  # where the state was read from, for people (several shards' files)

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "state": str(self.state_path),
            "machines": [m.to_json() for m in self.machines],
            "notes": self.notes,
        }


def collect(
    state_dir: Path,
    influx: InfluxSettings | None,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> FleetStatus:
    """The status of the production pipeline's machines (`influx` None: without scores)."""
    now = now or datetime.now(UTC)
    production = load_production(state_dir)
    path = production.where
    notes: list[str] = []
    if production.state is None:
        notes.append(f"no pipeline run has committed yet ({path} does not exist)")
        return FleetStatus(now, path, [], notes)
    state = production.state
    policy = OperatorPolicy.load(state_dir, env)
    machines = sorted(
        identities_from_state(state.extra.get("machines", {})),
        key=lambda m: (m.machine_id, m.unique_id),
    )
    latest: dict[str, tuple[datetime, float]] = {}
    if influx is not None and machines:
        try:
            latest = latest_scores(influx, now)
        except InfluxError as error:
            notes.append(f"latest scores unavailable: {error}")
    position = {key: row for row, key in enumerate(state.detector.machines)}
    rows = [
        _row(who, position[who.unique_id], state, policy, latest.get(who.unique_id), now)
        for who in machines
        if who.unique_id in position
    ]
    return FleetStatus(now, path, rows, notes, production.describe())


def _row(
    who: MachineIdentity,
    index: int,
    state: FleetState,
    policy: OperatorPolicy,
    latest: tuple[datetime, float] | None,
    now: datetime,
) -> MachineStatus:
    detector = state.detector
    config = detector.config
    row = np.array([index])
    last_ns = int(detector.last_time[row[0]])
    last = None if last_ns == np.iinfo(np.int64).min else pd.Timestamp(last_ns, tz="UTC")
    last_scored = None if last is None else last.to_pydatetime()
    rule = policy.rules([who], now, config.threshold).get(who.unique_id, MachineRule())
    warm = bool(detector.fleet.warm(row)[0])
    fill = int(detector.fleet.window_fill(row)[0])
    status = MachineStatus(
        unique_id=who.unique_id,
        machine_id=who.machine_id,
        provider=who.provider,
        state="ok",
        last_scored=last_scored,
        lag_seconds=None if last_scored is None else (now - last_scored).total_seconds(),
        warm=warm,
        window_fill=fill,
        window_size=config.window_size,
        threshold=rule.threshold if rule.threshold is not None else config.threshold,
        persistence=rule.persistence if rule.persistence is not None else config.persistence,
        feature_thresholds=dict(rule.feature_thresholds),
    )
    if latest is not None:
        status.latest_time, status.latest_score = latest
    episode = state.episodes.open.get(who.unique_id)
    muted_episode = False
    if episode is not None:
        status.open_episode = episode.episode_id
        status.episode_since = pd.Timestamp(episode.start, tz="UTC").to_pydatetime()
        record = policy.state.episodes.get(episode.episode_id)
        muted_episode = bool(record and record.muted)
        status.episode_note = _episode_note(episode.episode_id, policy, muted_episode)
    mutes = policy.mutes(who, now)
    if mutes:
        first = max(mutes, key=lambda m: m.until)
        status.muted_until = first.until
        status.mute_reason = "; ".join(f"{m.reason} ({m.source})" for m in mutes)
    status.overrides = _overrides(who, policy, rule, config.threshold, now)
    lagging = status.lag_seconds is None or status.lag_seconds > LAG_LIMIT.total_seconds()
    if episode is not None and not muted_episode:
        status.state = "anomaly"
    elif mutes or muted_episode:
        status.state = "muted"
    elif lagging:
        status.state = "lagging"
    elif not warm:
        status.state = "warming up"
    return status


def _episode_note(episode_id: str, policy: OperatorPolicy, muted: bool) -> str | None:
    """What operators said about an open episode, for people."""
    if muted:
        return "muted"
    action_id = policy.state.acks.get(episode_id)
    if action_id is None:
        return None
    action = next((a for a in policy.state.actions if a.id == action_id), None)
    what = (
        "false alarm" if action is not None and action.action == "false_alarm" else "acknowledged"
    )
    return f"{what} by {action.who}" if action is not None else what


def _overrides(
    who: MachineIdentity, policy: OperatorPolicy, rule: MachineRule, base: float, now: datetime
) -> list[str]:
    said = [
        f"{text} in {Path(policy.machines_file.source).name}"
        for text in policy.machines_file.overrides(who)
    ]
    marks = [f for f in policy.state.false_alarms if f.unique_id == who.unique_id]
    for feature, limit in sorted(rule.feature_thresholds.items()):
        fades = max(
            (datetime.fromisoformat(f.at) for f in marks if f.feature == feature), default=now
        ) + timedelta(seconds=policy.feedback.decay_seconds)
        said.append(
            f"{feature} threshold {limit:.3f} after false alarm(s), back to "
            f"{rule.threshold if rule.threshold is not None else base:.2f} by "
            f"{fades:%Y-%m-%d %H:%M} UTC"
        )
    return said


def latest_scores(influx: InfluxSettings, now: datetime) -> dict[str, tuple[datetime, float]]:
    """Each machine's latest stored score of the last `LATEST_WINDOW`, by unique_id."""
    sql = (
        'SELECT time, "machineID", provider, score FROM ('
        'SELECT time, "machineID", provider, score, row_number() OVER '
        '(PARTITION BY "machineID", provider ORDER BY time DESC) AS newest '
        f"FROM {sql_ident(SCORES_TABLE)} WHERE time >= $since) WHERE newest = 1"
    )
    frame = _scores_frame(influx, sql, {"since": time_param(now - LATEST_WINDOW)})
    return {
        uid: (time.to_pydatetime(), float(score))
        for uid, time, score in frame[["unique_id", "time", "score"]].itertuples(index=False)
    }


def score_history(
    influx: InfluxSettings, now: datetime, span: timedelta = HISTORY
) -> dict[str, list[tuple[str, float]]]:
    """Each machine's highest score per `HISTORY_BIN` over `span`: [(ISO time, score)]."""
    sql = (
        f"SELECT date_bin(INTERVAL '{HISTORY_BIN}', time) AS time, \"machineID\", provider, "
        f"max(score) AS score FROM {sql_ident(SCORES_TABLE)} WHERE time >= $since "
        'GROUP BY 1, "machineID", provider ORDER BY 1'
    )
    frame = _scores_frame(influx, sql, {"since": time_param(now - span)})
    history: dict[str, list[tuple[str, float]]] = {}
    for uid, time, score in frame[["unique_id", "time", "score"]].itertuples(index=False):
        history.setdefault(uid, []).append((time.isoformat(), round(float(score), 4)))
    return history


def _scores_frame(influx: InfluxSettings, sql: str, params: dict[str, str]) -> pd.DataFrame:
    columns = ["time", "machineID", "provider", "score", "unique_id"]
    try:
        with contextlib.closing(connect(influx, query_timeout=10.0)) as client:
            table = query_table(client, sql, params, what=f"reading {SCORES_TABLE}")
    except InfluxNotFound:  # no run has written scores yet
        return pd.DataFrame(columns=columns)
    frame = table.to_pandas()
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame = frame[frame["score"].notna()]
    frame["unique_id"] = unique_ids(frame["provider"].astype(str), frame["machineID"].astype(str))
    return frame


# --- for people -------------------------------------------------------------------------------


def _clock(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    if moment.date() == now.date():
        return f"{moment:%H:%M:%S}"
    return f"{moment:%Y-%m-%d %H:%M}"


def format_table(status: FleetStatus) -> str:
    """The status as a text table, one machine per line, then the notes.

    Times are UTC; an override or mute that does not fit its column is listed under the table.
    """
    now = status.now
    header = (
        "MACHINE",
        "UNIQUE_ID",
        "STATE",
        "LAST SCORED",
        "WARM-UP",
        "SCORE / THRESHOLD",
        "OPEN EPISODE",
        "MUTED UNTIL",
    )
    lines: list[Sequence[str]] = [header]
    details: list[str] = []
    for m in status.machines:
        lag = "" if m.lag_seconds is None else f" ({format_duration(m.lag_seconds)} ago)"
        score = "-" if m.latest_score is None else f"{m.latest_score:.2f}"
        threshold = f"{m.threshold:.2f}" + ("*" if m.feature_thresholds else "")
        episode = "-"
        if m.open_episode:
            episode = f"{m.open_episode} since {_clock(m.episode_since, now)}"
            if m.episode_note:
                episode += f" ({m.episode_note})"
        lines.append(
            (
                m.machine_id,
                m.unique_id,
                m.state,
                _clock(m.last_scored, now) + lag,
                "warm" if m.warm else f"{m.window_fill}/{m.window_size}",
                f"{score} / {threshold}",
                episode,
                _clock(m.muted_until, now),
            )
        )
        if m.mute_reason:
            details.append(f"{m.machine_id}: muted: {m.mute_reason}")
        for text in m.overrides:
            details.append(f"{m.machine_id}: {text}")
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    table = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in lines
    ]
    source = status.source or status.state_path
    top = f"fleet at {now:%Y-%m-%d %H:%M:%S} UTC: {len(status.machines)} machine(s), state {source}"
    out = [top, *table]
    if any(m.feature_thresholds for m in status.machines):
        details.append("* a raised threshold applies to some sensors' anomalies (see below)")
    out += details
    out += [f"note: {note}" for note in status.notes]
    return "\n".join(out)
