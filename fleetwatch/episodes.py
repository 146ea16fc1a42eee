"""Anomaly episodes: the alarm rule per point, and episodes that tell one fault as one story.

A fault is an *episode* of one machine, not a run of anomalous points:

* `AlarmRule` (used by the detector, point by point): the machine's alarm turns on at the
  `persistence`-th consecutive point above the threshold; while it is on every point belongs
  to it (above-threshold points are the anomalous ones); it turns off at the `quiet_points`-th
  consecutive point at or below the threshold, or before a point that comes `quiet_seconds` of
  *data* time after the last anomalous one (a gap in the data). The detector does not learn
  points while the alarm is on, so a sustained fault cannot become the reference. Vectorized
  with carried state, so a stream split across runs gives exactly the alarms of one run. One
  stretch of alarm is a *burst*.
* `EpisodeTracker` (after scoring): bursts of one machine less than `recur_gap_seconds` apart
  (default 10 min, from the end of one burst's last anomalous point to the next burst) are one
  episode, one story for the people it alerts:
  - "opened" when its first burst starts (the alert);
  - "recurring" when another burst joins it, at most one per `follow_up_seconds` (1 h) after
    the last message about it, with the number of bursts so far (same episode id);
  - "resolved" once `recur_gap_seconds` of data time have passed since its last anomalous point
    with the alarm off (`resolution = "quiet"`), or, for a machine that went silent with the
    alarm on, `max(recur_gap_seconds, quiet_seconds)` after it (`"timeout"`; the fleet's data
    time, `now`, tells).
  A `cooldown_seconds` after a resolution (default 0: off) holds back the next "opened" of that
  machine until it ends; the event is then `delayed`. An episode is never left unannounced: one
  that resolves while held back is announced just before its "resolved". Every event carries
  a snapshot of the episode: machine, start and last anomalous point, peak score, the sensor
  values at the peak and the features that deviated most, bursts, status (`open`, `held`,
  `resolved`). `follow` also returns every episode the frame changed and the episode id of
  every point inside a burst.

All times are data times (nanoseconds since the epoch): re-running on the same data gives
the same episodes, ids and events, whatever the wall clock says, and a stream split across
runs (with the tracker saved in between) gives the events of one run. Events and episodes go
to JSON and back (`to_dict` / `from_dict`) unchanged, so a pipeline can hand them from step to
step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from fleetwatch.attribution import describe, ranked_contributors

__all__ = [
    "AlarmRule",
    "AlarmState",
    "Episode",
    "EpisodeEvent",
    "EpisodeTracker",
    "EpisodeUpdate",
    "as_nanoseconds",
]

NO_TIME = np.iinfo(np.int64).min  # "never": no anomalous point yet


@dataclass(frozen=True)
class AlarmRule:
    """When an episode opens and when it resolves (see the module doc)."""

    persistence: int = 3
    quiet_points: int = 30
    quiet_seconds: float | None = 300.0

    def __post_init__(self) -> None:
        if self.persistence < 1 or self.quiet_points < 1:
            raise ValueError("persistence and quiet_points must be >= 1")
        if self.quiet_seconds is not None and not self.quiet_seconds > 0:
            raise ValueError("quiet_seconds must be > 0 (or None for no time rule)")

    @property
    def quiet_ns(self) -> int | None:
        return None if self.quiet_seconds is None else round(self.quiet_seconds * 1e9)


class AlarmState:
    """Per machine: the alarm rule's carried state between batches and runs."""

    FIELDS = ("run", "quiet", "open", "last_above", "started")

    def __init__(self) -> None:
        self.run = np.zeros(0, np.int64)  # consecutive points above the threshold
        self.quiet = np.zeros(0, np.int64)  # consecutive points at or below it
        self.open = np.zeros(0, bool)
        self.last_above = np.zeros(0, np.int64)  # time of the last point above (NO_TIME)
        self.started = np.zeros(0, np.int64)  # time the last episode opened (NO_TIME)

    def add_models(self, count: int) -> None:
        self.run = np.r_[self.run, np.zeros(count, np.int64)]
        self.quiet = np.r_[self.quiet, np.zeros(count, np.int64)]
        self.open = np.r_[self.open, np.zeros(count, bool)]
        self.last_above = np.r_[self.last_above, np.full(count, NO_TIME, np.int64)]
        self.started = np.r_[self.started, np.full(count, NO_TIME, np.int64)]

    def step(
        self,
        rule: AlarmRule,
        rows: np.ndarray,
        starts: np.ndarray,
        times: np.ndarray,
        above: np.ndarray,
        persistence: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Apply the rule to points grouped by machine (`rows[g]`'s points begin at
        `starts[g]`, in time order), from each machine's carried state. Does not change the
        state: `commit` the state at the last point each machine keeps. `persistence[g]`, when
        given, replaces the rule's persistence for group `g` (a per-machine override).

        Every quantity is a running count or a "last time" that restarts at a machine; both
        come from `maximum.accumulate` over indices, with one virtual element in front of
        each machine holding its carried state.
        """
        n, groups = len(times), len(starts)
        sizes = np.diff(np.r_[starts, n])
        size = n + groups
        group = np.repeat(np.arange(groups), sizes + 1)
        virtual = np.zeros(size, bool)
        virtual[starts + np.arange(groups)] = True
        point = ~virtual
        index = np.arange(size)
        up = np.zeros(size, bool)
        up[point] = above
        t = np.zeros(size, np.int64)
        t[point] = times
        row = rows[group]

        def last(mask: np.ndarray) -> np.ndarray:
            return np.maximum.accumulate(np.where(mask | virtual, index, 0))

        since_down, since_up = last(~up), last(up)
        run = index - since_down + np.where(virtual[since_down], self.run[row], 0)
        quiet = index - since_up + np.where(virtual[since_up], self.quiet[row], 0)
        last_up = np.where(virtual[since_up], self.last_above[row], t[since_up])
        before_up = np.roll(last_up, 1)  # last time above before this point
        gap = np.zeros(size, bool)
        if rule.quiet_ns is not None:
            known = before_up != NO_TIME
            gap = point & known & (t - np.where(known, before_up, t) >= rule.quiet_ns)
        needed = rule.persistence if persistence is None else np.asarray(persistence)[group]
        opens = up & (run >= needed)
        closes = (quiet >= rule.quiet_points) | gap
        code = np.where(opens, 1, np.where(closes, 0, -1))
        code[virtual] = self.open[rows]
        after = code[last(code >= 0)] == 1  # open after this point
        before = np.roll(after, 1) & ~gap  # open when this point arrives
        inside = before | opens
        since_start = last(opens & ~before)
        started = np.where(virtual[since_start], self.started[row], t[since_start])
        result = {
            "in_episode": inside,
            "episode_start": opens & ~before,
            "episode_end": inside & ~after,
            "gap_closed": np.roll(after, 1) & gap,
            "is_anomaly": up & inside,
            "run": run,
            "quiet": quiet,
            "open": after,
            "last_above": last_up,
            "started": started,
        }
        return {name: values[point] for name, values in result.items()}

    def commit(self, rows: np.ndarray, steps: Mapping[str, np.ndarray], at: np.ndarray) -> None:
        """Keep the state after point `at[i]` as machine `rows[i]`'s carried state."""
        for name in self.FIELDS:
            getattr(self, name)[rows] = steps[name][at]

    def state(self) -> dict[str, np.ndarray]:
        return {f"alarm_{name}": getattr(self, name) for name in self.FIELDS}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        values = {name: np.asarray(arrays[f"alarm_{name}"]) for name in self.FIELDS}
        if len({len(v) for v in values.values()}) != 1:
            raise ValueError("alarm arrays disagree on the number of machines")
        self.run = values["run"].astype(np.int64)
        self.quiet = values["quiet"].astype(np.int64)
        self.open = values["open"].astype(bool)
        self.last_above = values["last_above"].astype(np.int64)
        self.started = values["started"].astype(np.int64)


@dataclass
class Episode:
    """One fault of one machine: its bursts of anomalous points, separated by less than the
    tracker's `recur_gap_seconds`. Times are nanoseconds since the epoch (data time)."""

    machine: str
    episode_id: str
    start: int
    end: int  # the last anomalous point so far
    peak_score: float
    peak_time: int
    peak_values: dict[str, float]
    deviations: dict[str, float]  # at the peak, signed, in units of the feature's scale
    top_features: list[str]
    points: int = 0  # anomalous points
    bursts: int = 1  # runs of points the detector flagged (its alarm episodes)
    in_burst: bool = True  # the detector's alarm is on for this machine
    burst_closed: int | None = None  # when the last burst ended (None while one is on)
    last_seen: int = 0  # the machine's latest point while the episode is open
    announced: bool = False
    follow_ups: int = 0  # "recurring" events sent
    last_message: int | None = None  # data time of the last "opened" or "recurring" event
    resolved_at: int | None = None
    resolution: str | None = None  # "quiet" (it stayed quiet) or "timeout" (no data)
    moved: list[str] = field(default_factory=list)  # the top features at the peak, in words

    @property
    def status(self) -> str:
        """`open`, `held` (open, its alert held back by the cooldown) or `resolved`."""
        if self.resolved_at is not None:
            return "resolved"
        return "open" if self.announced else "held"

    def to_dict(self) -> dict:
        """JSON-ready, with the status and ISO-8601 UTC times next to the nanosecond ones."""
        data = asdict(self)
        data["status"] = self.status
        for name in ("start", "end", "peak_time", "resolved_at"):
            if data[name] is not None:
                data[f"{name}_iso"] = pd.Timestamp(data[name], tz="UTC").isoformat()
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> Episode:
        """The episode `to_dict` wrote (the status and the `*_iso` copies are derived)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


#: The events of an episode: its alert, follow-ups while it recurs, its all-clear.
EVENT_KINDS = ("opened", "recurring", "resolved")


@dataclass(frozen=True)
class EpisodeEvent:
    """An alert ("opened"), a follow-up ("recurring": another burst, at most one per
    `follow_up_seconds`) or an all-clear ("resolved") for one episode, at data time `time`."""

    kind: str
    time: int
    episode: Episode
    delayed: bool = False  # an "opened" held back by the cooldown

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "time": self.time,
            "time_iso": pd.Timestamp(self.time, tz="UTC").isoformat(),
            "delayed": self.delayed,
            **self.episode.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> EpisodeEvent:
        """The event `to_dict` wrote."""
        return cls(data["kind"], int(data["time"]), Episode.from_dict(data), bool(data["delayed"]))


@dataclass(frozen=True)
class EpisodeUpdate:
    """What one frame did to the episodes: the events; every episode that changed (opened,
    grew, was announced or resolved), as it is after the frame; and each row's episode id
    (None outside the bursts), indexed like the frame."""

    events: list[EpisodeEvent]
    episodes: list[Episode]
    episode_ids: pd.Series


def episode_id(machine: str, start: int) -> str:
    """Stable id: the same machine and start give the same id on every run."""
    return hashlib.sha256(f"{machine}\x00{start}".encode()).hexdigest()[:16]


@dataclass
class EpisodeTracker:
    """Episode records and events from the detector's scored frames (see the module doc)."""

    features: tuple[str, ...]
    rule: AlarmRule = field(default_factory=AlarmRule)
    recur_gap_seconds: float = 600.0
    follow_up_seconds: float = 3600.0
    cooldown_seconds: float = 0.0
    top_features: int = 3
    driver: str | None = "load"  # the feature the `fit` view explains others by (for words)
    open: dict[str, Episode] = field(default_factory=dict)
    quiet_until: dict[str, int] = field(default_factory=dict)  # cooldown ends (per machine)

    def __post_init__(self) -> None:
        for name in ("recur_gap_seconds", "follow_up_seconds", "cooldown_seconds"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def update(
        self,
        scored: pd.DataFrame,
        key: str = "unique_id",
        time: str = "time",
        now: pd.Timestamp | int | None = None,
    ) -> list[EpisodeEvent]:
        """Advance the episodes with a frame from `FleetDetector.score_frame`; the events.

        `now` is the data time the fleet has reached (default: the frame's latest time); it
        resolves episodes of machines that went silent.
        """
        return self.follow(scored, key, time, now).events

    def follow(
        self,
        scored: pd.DataFrame,
        key: str = "unique_id",
        time: str = "time",
        now: pd.Timestamp | int | None = None,
    ) -> EpisodeUpdate:
        """`update`, with the episodes that changed and every row's episode id."""
        events: list[EpisodeEvent] = []
        touched: dict[str, Episode] = {}
        ids = np.full(len(scored), None, dtype=object)
        live = (
            np.flatnonzero(scored["status"].to_numpy() == "scored")
            if len(scored)
            else np.zeros(0, np.intp)
        )
        frame = scored.iloc[live]
        times = as_nanoseconds(frame[time]) if len(frame) else np.zeros(0, np.int64)
        if len(frame):
            machines = frame[key].astype(str).to_numpy()
            flags = frame["in_episode"].to_numpy(bool) | frame["episode_end"].to_numpy(bool)
            relevant = set(machines[flags]) | (set(self.open) & set(machines))
            if relevant:
                picked = np.isin(machines, list(relevant))
                order = np.lexsort((times[picked], machines[picked]))
                rows = frame[picked].iloc[order]
                found = self._walk(
                    rows, machines[picked][order], times[picked][order], events, touched
                )
                ids[live[np.flatnonzero(picked)[order]]] = found
        if now is not None:
            self._clock(int(as_nanoseconds([now])[0]), events, touched)
        elif len(times):
            self._clock(int(times.max()), events, touched)
        events.sort(key=lambda e: (e.time, e.episode.machine))  # stable: causal per machine
        episodes = [_copy(episode) for episode in touched.values()]
        return EpisodeUpdate(events, episodes, pd.Series(ids, index=scored.index, dtype=object))

    def _walk(
        self,
        rows: pd.DataFrame,
        machines: np.ndarray,
        times: np.ndarray,
        events: list[EpisodeEvent],
        touched: dict[str, Episode],
    ) -> np.ndarray:
        """Walk the rows in (machine, time) order; each row's episode id (None outside)."""
        ids = np.full(len(rows), None, dtype=object)
        scores = rows["score"].to_numpy(np.float64)
        anomalous = rows["is_anomaly"].to_numpy(bool)
        inside = rows["in_episode"].to_numpy(bool)
        starts = rows["episode_start"].to_numpy(bool)
        ends = rows["episode_end"].to_numpy(bool)
        values = rows[list(self.features)].to_numpy(np.float64)
        devs = rows[[f"dev_{f}" for f in self.features]].to_numpy(np.float64)
        view_columns = [f"dev_view_{f}" for f in self.features]
        views = (
            rows[view_columns].to_numpy(object)
            if set(view_columns) <= set(rows.columns)
            else np.full(devs.shape, None, dtype=object)
        )
        quiet_ns = self.rule.quiet_ns
        for i, machine in enumerate(machines):
            t = int(times[i])
            episode = self.open.get(machine)
            if episode is not None and episode.in_burst and (starts[i] or not inside[i]):
                # The detector ended the burst before this point: a gap in the data.
                episode.in_burst = False
                episode.burst_closed = t if quiet_ns is None else min(t, episode.end + quiet_ns)
                touched[episode.episode_id] = episode
            if episode is not None:
                self._announce_if_due(episode, t, events, touched)
                due = self._due(episode)
                if not episode.in_burst and due is not None and t >= due:
                    self._resolve(episode, due, events, touched)
                    episode = None
                else:
                    episode.last_seen = t
            if not inside[i]:
                continue
            if episode is None:
                episode = Episode(machine, episode_id(machine, t), t, t, -np.inf, t, {}, {}, [])
                episode.last_seen = t
                self.open[machine] = episode
            elif not episode.in_burst:
                episode.in_burst, episode.burst_closed = True, None
                episode.bursts += 1
                self._follow_up_if_due(episode, t, events)
            touched[episode.episode_id] = episode
            ids[i] = episode.episode_id
            if anomalous[i]:
                episode.end = t
                episode.points += 1
            if scores[i] > episode.peak_score:
                episode.peak_score, episode.peak_time = float(scores[i]), t
                episode.peak_values = dict(zip(self.features, values[i].tolist(), strict=True))
                episode.deviations = dict(zip(self.features, devs[i].tolist(), strict=True))
                episode.top_features = self._top(episode.deviations)
                found_by = dict(zip(self.features, views[i], strict=True))
                episode.moved = [
                    describe(f, episode.deviations[f], found_by[f] or "", self.driver)
                    for f in episode.top_features
                ]
            if not episode.announced and t >= self.quiet_until.get(machine, NO_TIME):
                self._announce(episode, t, events)
            if ends[i]:
                episode.in_burst, episode.burst_closed = False, t
        return ids

    def _clock(self, now: int, events: list[EpisodeEvent], touched: dict[str, Episode]) -> None:
        """The fleet's data time reached `now`: announce held episodes whose cooldown ended,
        resolve episodes whose machine stayed quiet (or silent) long enough."""
        for episode in list(self.open.values()):
            self._announce_if_due(episode, now, events, touched)
            due = self._due(episode)
            if due is not None and now >= due:
                self._resolve(episode, due, events, touched)

    def _due(self, episode: Episode) -> int | None:
        """When the episode resolves if no burst comes: `recur_gap_seconds` after its last
        anomalous point once the detector's alarm is off (not before the alarm went off);
        while the alarm is on and the machine sends nothing, when the alarm rule would end it
        (`quiet_seconds`) or `recur_gap_seconds`, whichever is later (None: never by time)."""
        gap = round(self.recur_gap_seconds * 1e9)
        if not episode.in_burst:
            assert episode.burst_closed is not None
            return max(episode.burst_closed, episode.end + gap)
        quiet_ns = self.rule.quiet_ns
        return None if quiet_ns is None else episode.end + max(gap, quiet_ns)

    def _announce_if_due(
        self, episode: Episode, now: int, events: list[EpisodeEvent], touched: dict[str, Episode]
    ) -> None:
        """Announce a held-back episode whose machine's cooldown ended before `now` while it
        was still open, as it was then (a run that stopped in between would have). (A
        cooldown ending exactly at `now` waits for the point at `now`, if one comes.)"""
        cooldown_end = self.quiet_until.get(episode.machine, NO_TIME)
        due = self._due(episode)
        if not episode.announced and now > cooldown_end and (due is None or cooldown_end < due):
            self._announce(episode, max(episode.start, cooldown_end), events)
            touched[episode.episode_id] = episode

    def _announce(self, episode: Episode, at: int, events: list[EpisodeEvent]) -> None:
        """The alert, at the data time it became due: the start, or the cooldown's end."""
        episode.announced, episode.last_message = True, at
        events.append(EpisodeEvent("opened", at, _copy(episode), delayed=at > episode.start))

    def _follow_up_if_due(self, episode: Episode, t: int, events: list[EpisodeEvent]) -> None:
        """Another burst of an announced episode: a "recurring" event, at most one per
        `follow_up_seconds`."""
        if not episode.announced or episode.last_message is None:
            return
        if t - episode.last_message >= round(self.follow_up_seconds * 1e9):
            episode.follow_ups += 1
            episode.last_message = t
            events.append(EpisodeEvent("recurring", t, _copy(episode)))

    def _resolve(
        self, episode: Episode, t: int, events: list[EpisodeEvent], touched: dict[str, Episode]
    ) -> None:
        """The all-clear at `t`: "quiet" when the machine sent points after the last anomalous
        one, "timeout" when it went silent. An episode the cooldown still held back is
        announced first: no episode ends unannounced."""
        if not episode.announced:
            cooldown_end = self.quiet_until.get(episode.machine, NO_TIME)
            self._announce(episode, max(episode.start, min(cooldown_end, t)), events)
        episode.resolved_at = t
        episode.resolution = "quiet" if episode.last_seen > episode.end else "timeout"
        episode.in_burst = False
        del self.open[episode.machine]
        self.quiet_until[episode.machine] = t + round(self.cooldown_seconds * 1e9)
        events.append(EpisodeEvent("resolved", t, _copy(episode)))
        touched[episode.episode_id] = episode

    def _top(self, deviations: Mapping[str, float]) -> list[str]:
        """The features that moved (`fleetwatch.attribution`), largest first."""
        finite = {f: d for f, d in deviations.items() if np.isfinite(d) and d != 0}
        return ranked_contributors(finite, self.top_features)

    def to_json(self) -> dict:
        """The tracker's state as JSON-ready data (persisted with the detector)."""
        return {
            "features": list(self.features),
            "rule": asdict(self.rule),
            "recur_gap_seconds": self.recur_gap_seconds,
            "follow_up_seconds": self.follow_up_seconds,
            "cooldown_seconds": self.cooldown_seconds,
            "top_features": self.top_features,
            "driver": self.driver,
            "open": [asdict(e) for e in self.open.values()],
            "quiet_until": self.quiet_until,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> EpisodeTracker:
        tracker = cls(
            tuple(data["features"]),
            AlarmRule(**data["rule"]),
            recur_gap_seconds=float(data["recur_gap_seconds"]),
            follow_up_seconds=float(data["follow_up_seconds"]),
            cooldown_seconds=float(data["cooldown_seconds"]),
            top_features=int(data["top_features"]),
            driver=data["driver"],
        )
        for item in data["open"]:
            episode = Episode(**item)
            tracker.open[episode.machine] = episode
        tracker.quiet_until = {str(k): int(v) for k, v in data["quiet_until"].items()}
        return tracker


def _copy(episode: Episode) -> Episode:
    """A snapshot for an event (the open record keeps changing)."""
    return Episode(**{**asdict(episode)})


def as_nanoseconds(values: pd.Series | Sequence) -> np.ndarray:
    """Times as int64 nanoseconds since the epoch (naive times are taken as UTC; integers are
    nanoseconds; NaT is NO_TIME)."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8
