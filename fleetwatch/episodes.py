"""Anomaly episodes: the alarm rule per point, and episodes with one alert and one resolution.

A fault is an *episode* of one machine, not a run of anomalous points:

* `AlarmRule` (used by the detector, point by point): an episode opens at the `persistence`-th
  consecutive point above the threshold; while open every point belongs to it (above-threshold
  points are the anomalous ones); it resolves at the `quiet_points`-th consecutive point at or
  below the threshold, or before a point that comes `quiet_seconds` of *data* time after the
  last anomalous one (a gap in the data). The detector does not learn points inside an open
  episode, so a sustained fault cannot become the reference. Vectorized with carried state, so
  a stream split across runs gives exactly the episodes of one run.
* `EpisodeTracker` (after scoring): turns the detector's per-point flags into episode records
  and events: one "opened" event (the alert) and one "resolved" event per episode, with the
  machine, start and end, peak score, the sensor values at the peak and the features that
  deviated most, and the episode id of every point inside an episode (`follow`). An episode
  also resolves ("timeout") once `quiet_seconds` of data time pass without an anomalous point:
  a gap in the machine's data, or the fleet's data time moving on while the machine is
  silent. A `cooldown_seconds` after a resolution holds back the next alert for that machine:
  an episode that ends within the cooldown is recorded without messages (flapping), one still
  open when the cooldown ends is announced then.

All times are data times (nanoseconds since the epoch): re-running on the same data gives
the same episodes and ids, whatever the wall clock says. Events and episodes go to JSON and
back (`to_dict` / `from_dict`) unchanged, so a pipeline can hand them from step to step.
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
    ) -> dict[str, np.ndarray]:
        """Apply the rule to points grouped by machine (`rows[g]`'s points begin at
        `starts[g]`, in time order), from each machine's carried state. Does not change the
        state: `commit` the state at the last point each machine keeps.

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
        opens = up & (run >= rule.persistence)
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
    """One fault of one machine. Times are nanoseconds since the epoch (data time)."""

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
    announced: bool = False
    resolved_at: int | None = None
    resolution: str | None = None  # "quiet" (enough quiet points) or "timeout" (data time)
    moved: list[str] = field(default_factory=list)  # the top features at the peak, in words

    def to_dict(self) -> dict:
        """JSON-ready, with ISO-8601 UTC times next to the nanosecond ones."""
        data = asdict(self)
        for name in ("start", "end", "peak_time", "resolved_at"):
            if data[name] is not None:
                data[f"{name}_iso"] = pd.Timestamp(data[name], tz="UTC").isoformat()
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> Episode:
        """The episode `to_dict` wrote (the `*_iso` copies are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class EpisodeEvent:
    """An alert ("opened") or an all-clear ("resolved") for one episode, at data time `time`."""

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
    """What one frame did to the episodes: the events, and each row's episode id (None
    outside episodes), indexed like the frame."""

    events: list[EpisodeEvent]
    episode_ids: pd.Series


def episode_id(machine: str, start: int) -> str:
    """Stable id: the same machine and start give the same id on every run."""
    return hashlib.sha256(f"{machine}\x00{start}".encode()).hexdigest()[:16]


@dataclass
class EpisodeTracker:
    """Episode records and events from the detector's scored frames (see the module doc)."""

    features: tuple[str, ...]
    rule: AlarmRule = field(default_factory=AlarmRule)
    cooldown_seconds: float = 600.0
    top_features: int = 3
    driver: str | None = "load"  # the feature the `fit` view explains others by (for words)
    open: dict[str, Episode] = field(default_factory=dict)
    quiet_until: dict[str, int] = field(default_factory=dict)  # cooldown ends (per machine)
    suppressed: int = 0  # episodes that ended inside a cooldown, never announced

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
        """`update`, with the episode id of every row of `scored` (None outside episodes)."""
        events: list[EpisodeEvent] = []
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
                sub = frame[picked]
                order = np.lexsort((times[picked], machines[picked]))
                found = self._walk(
                    sub.iloc[order], machines[picked][order], times[picked][order], events
                )
                ids[live[np.flatnonzero(picked)[order]]] = found
        if now is not None:
            self._clock(int(as_nanoseconds([now])[0]), events)
        elif len(times):
            self._clock(int(times.max()), events)
        events.sort(key=lambda e: (e.time, e.episode.machine, e.kind != "resolved"))
        return EpisodeUpdate(events, pd.Series(ids, index=scored.index, dtype=object))

    def _walk(
        self, rows: pd.DataFrame, machines: np.ndarray, times: np.ndarray, events: list
    ) -> np.ndarray:
        """Walk the rows in (machine, time) order; each row's episode id (None outside)."""
        ids = np.full(len(rows), None, dtype=object)
        cols = {name: rows[name].to_numpy() for name in ("score", "is_anomaly", "in_episode")}
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
            inside = bool(cols["in_episode"][i])
            if episode is not None and (starts[i] or not inside):
                # The detector closed it before this point: a gap in the data.
                timeout = episode.end + quiet_ns if quiet_ns is not None else t
                at = min(timeout, t)
                self._announce_if_due(episode, at, timeout, events)
                self._resolve(episode, at, "timeout", events)
                episode = None
            if not inside:
                continue
            if episode is None:
                episode = Episode(machine, episode_id(machine, t), t, t, -np.inf, t, {}, {}, [])
                self.open[machine] = episode
            elif not episode.announced and t > self.quiet_until.get(machine, NO_TIME):
                # Due before this point (the cooldown ended in between): announce the
                # episode as it was then, as a run that stopped in between would have.
                self._announce(episode, events)
            ids[i] = episode.episode_id
            if cols["is_anomaly"][i]:
                episode.end = t
                episode.points += 1
            if float(cols["score"][i]) > episode.peak_score:
                episode.peak_score, episode.peak_time = float(cols["score"][i]), t
                episode.peak_values = dict(zip(self.features, values[i].tolist(), strict=True))
                episode.deviations = dict(zip(self.features, devs[i].tolist(), strict=True))
                episode.top_features = self._top(episode.deviations)
                found_by = dict(zip(self.features, views[i], strict=True))
                episode.moved = [
                    describe(f, episode.deviations[f], found_by[f] or "", self.driver)
                    for f in episode.top_features
                ]
            if not episode.announced and t >= self.quiet_until.get(machine, NO_TIME):
                self._announce(episode, events)
            if ends[i]:
                self._resolve(episode, t, "quiet", events)
        return ids

    def _clock(self, now: int, events: list) -> None:
        quiet_ns = self.rule.quiet_ns
        for episode in list(self.open.values()):
            timeout = None if quiet_ns is None else episode.end + quiet_ns
            self._announce_if_due(episode, now, timeout, events)
            if timeout is not None and now >= timeout:
                self._resolve(episode, timeout, "timeout", events)

    def _announce_if_due(
        self, episode: Episode, now: int, timeout: int | None, events: list
    ) -> None:
        """Announce a held-back episode whose machine's cooldown ended before `now` while it
        was still open (before its timeout), whether or not a point arrived in between. (A
        cooldown ending exactly at `now` waits for the point at `now`, if one comes.)"""
        cooldown_end = self.quiet_until.get(episode.machine, NO_TIME)
        if (
            not episode.announced
            and now > cooldown_end
            and (timeout is None or cooldown_end < timeout)
        ):
            self._announce(episode, events)

    def _announce(self, episode: Episode, events: list) -> None:
        """The alert, at the data time it became due: the start, or the cooldown's end."""
        t = max(episode.start, self.quiet_until.get(episode.machine, NO_TIME))
        episode.announced = True
        events.append(EpisodeEvent("opened", t, _copy(episode), delayed=t > episode.start))

    def _resolve(self, episode: Episode, t: int, how: str, events: list) -> None:
        episode.resolved_at, episode.resolution = t, how
        del self.open[episode.machine]
        self.quiet_until[episode.machine] = t + round(self.cooldown_seconds * 1e9)
        if episode.announced:
            events.append(EpisodeEvent("resolved", t, _copy(episode)))
        else:
            self.suppressed += 1

    def _top(self, deviations: Mapping[str, float]) -> list[str]:
        """The features that moved (`fleetwatch.attribution`), largest first."""
        finite = {f: d for f, d in deviations.items() if np.isfinite(d) and d != 0}
        return ranked_contributors(finite, self.top_features)

    def to_json(self) -> dict:
        """The tracker's state as JSON-ready data (persisted with the detector)."""
        return {
            "features": list(self.features),
            "rule": asdict(self.rule),
            "cooldown_seconds": self.cooldown_seconds,
            "top_features": self.top_features,
            "driver": self.driver,
            "open": [asdict(e) for e in self.open.values()],
            "quiet_until": self.quiet_until,
            "suppressed": self.suppressed,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> EpisodeTracker:
        tracker = cls(
            tuple(data["features"]),
            AlarmRule(**data["rule"]),
            float(data["cooldown_seconds"]),
            int(data["top_features"]),
            data["driver"],
        )
        for item in data["open"]:
            episode = Episode(**item)
            tracker.open[episode.machine] = episode
        tracker.quiet_until = {str(k): int(v) for k, v in data["quiet_until"].items()}
        tracker.suppressed = int(data["suppressed"])
        return tracker


def _copy(episode: Episode) -> Episode:
    """A snapshot for an event (the open record keeps changing)."""
    return Episode(**{**asdict(episode)})


def as_nanoseconds(values: pd.Series | Sequence) -> np.ndarray:
    """Times as int64 nanoseconds since the epoch (naive times are taken as UTC; integers are
    nanoseconds; NaT is NO_TIME)."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8
