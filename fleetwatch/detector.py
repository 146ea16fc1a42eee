"""`FleetDetector`: one Half-Space Trees model per machine, scoring frames of telemetry.

What the upstream demo did per run (a new model per machine, power only, batch min-max,
learn-then-score, `score > 0.8` point by point) becomes a detector that keeps its state:

* one model per series key, all sharing tree structure (`fleetwatch.fleet`); unseen machines
  get a fresh model on their first point;
* features `load, vibration, power, temperature` by default, each seen through online views
  (`fleetwatch.views`): the trees score the size of every sensor's latest step (robust
  z-scores), and a statistical member adds the sensors' level, stuck-run and load-fit
  residual z-scores; the
  score is the larger of the two, the z-scores squashed so that `z_alarm` deviations land on
  the threshold. `views=()` is the raw mode (one model over the values, scaled by physical
  limits or an online min-max, `fleetwatch.scaling`). Never scaled by the batch;
* test-then-train: each point is scored before it is learned;
* gaps are not faults: a point more than `gap_seconds` (and `GAP_FACTOR` times the interval
  before) after its machine's previous one is compared with nothing before the gap (no step;
  see `FeatureViews.transform`);
* warm-up: a machine scores 0 until its model's first window is full, so nothing alerts
  before;
* threshold (0.8) and persistence (3 consecutive points) open an episode
  (`fleetwatch.episodes.AlarmRule`); points inside an open episode are not learned unless
  `learn_anomalies=True`, so a sustained fault stays anomalous instead of becoming normal.

Input rules, per machine (documented in fleetwatch/README.md):

* points are processed in time order, whatever the frame's row order;
* a point at or before the machine's last processed time (a duplicate, or data already seen
  by an earlier run) is skipped: `status = "stale"`;
* a missing or NaN feature takes the machine's last valid value of that feature; with none
  yet the point is skipped: `status = "missing"`; a missing time or key: `"bad_time"`,
  `"bad_key"`. Skipped points keep their row, with `score` NaN, and are counted.

The output frame is the input plus: `score` (continuous, before threshold and persistence),
`warm`, `is_anomaly`, `in_episode`, `episode_start`, `episode_end`, `learned`, `status`, and
`dev_<feature>`: how unusual the feature is. In the views mode, the signed z-score of its
most unusual view (level, step, stuck run or fit residual); in the raw mode, how far the
value lies outside the range of the model's last complete window, in units of its scale.

>>> import pandas as pd
>>> times = pd.date_range("2024-01-01", periods=400, freq="s")
>>> power = [210.0 + (i % 7) for i in range(360)] + [480.0] * 40
>>> frame = pd.DataFrame({"unique_id": "m1", "time": times, "power": power})
>>> scored = FleetDetector(DetectorConfig(features=("power",))).score_frame(frame)
>>> str(scored.loc[scored["episode_start"], "time"].iloc[0]), bool(scored["in_episode"].iloc[-1])
('2024-01-01 00:06:02', True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fleetwatch.episodes import NO_TIME, AlarmRule, AlarmState, as_nanoseconds
from fleetwatch.fleet import EngineFactory, Fleet, KeyIndex
from fleetwatch.scaling import LimitScaler, OnlineMinMaxScaler, Scaler
from fleetwatch.views import VIEWS, FeatureViews, ViewSettings

__all__ = ["DEFAULT_FEATURES", "DetectorConfig", "FleetDetector"]

DEFAULT_FEATURES = ("load", "vibration", "power", "temperature")
STATUSES = ("scored", "stale", "missing", "bad_time", "bad_key")
#: A reading this many times the interval before it after the previous one (and more than
#: `gap_seconds`) follows a gap.
GAP_FACTOR = 5.0


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that decides scores and episodes. Saved with the state: a state file is
    only loaded by a detector with the same configuration.

    `views` (default: change; see `fleetwatch.views`) are what the trees score, scaled
    online by robust z-scores; `stat_views` (level, still, fit) what the statistical member
    watches. `driver` is the feature the `fit` view regresses the others on (ignored when it
    is not among `features`: then `fit` is 0, e.g. on one series). `views=()` is the raw mode: one
    model over the features themselves, scaled by `limits` (physical ranges) or, with
    `limits=None`, an online min-max per machine.
    """

    features: tuple[str, ...] = DEFAULT_FEATURES
    views: tuple[str, ...] = ("change",)
    stat_views: tuple[str, ...] = ("level", "still", "fit")
    driver: str | None = "load"
    z_alarm: float = 5.0
    stat_band: float = 0.25
    level_span: int = 600
    change_span: int = 100
    outlier_z: float = 3.0
    z_clip: float = 8.0
    limits: Mapping[str, tuple[float, float]] | None = None
    n_trees: int = 25
    height: int = 4
    window_size: int = 250
    seed: int = 1
    threshold: float = 0.8
    persistence: int = 3
    quiet_points: int = 30
    quiet_seconds: float | None = 300.0
    learn_anomalies: bool = False
    accept_after_seconds: float | None = 1800.0
    gap_seconds: float | None = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "views", tuple(self.views))
        object.__setattr__(self, "stat_views", tuple(self.stat_views))
        for name in (*self.views, *self.stat_views):
            if name not in VIEWS:
                raise ValueError(f"unknown view {name!r}; choose from {', '.join(VIEWS)}")
        if self.accept_after_seconds is not None and not self.accept_after_seconds > 0:
            raise ValueError("accept_after_seconds must be > 0 (or None: never)")
        if self.gap_seconds is not None and not self.gap_seconds > 0:
            raise ValueError("gap_seconds must be > 0 (or None: no gap is special)")
        if self.driver is not None and not isinstance(self.driver, str):
            raise ValueError(f"driver must be a feature name or None, got {self.driver!r}")
        if not 0.0 <= self.stat_band <= 1.0:
            raise ValueError(f"stat_band must be in [0, 1], got {self.stat_band}")
        if not self.z_alarm > 0:
            raise ValueError(f"z_alarm must be > 0, got {self.z_alarm}")
        if self.limits is not None:
            limits = {str(k): (float(v[0]), float(v[1])) for k, v in self.limits.items()}
            object.__setattr__(self, "limits", limits)
        if not self.views and self.stat_views:
            raise ValueError("stat_views join the views mode; the raw mode (views=()) has none")
        if self.views and self.limits is not None:
            raise ValueError("limits scale the raw mode (views=()); views scale themselves")
        if self.views:
            self.view_settings  # noqa: B018 - checks the view settings
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")

    @property
    def rule(self) -> AlarmRule:
        return AlarmRule(self.persistence, self.quiet_points, self.quiet_seconds)

    @property
    def gap_ns(self) -> int:
        """`gap_seconds` in nanoseconds (only when it is set)."""
        assert self.gap_seconds is not None
        return round(self.gap_seconds * 1e9)

    @property
    def view_settings(self) -> ViewSettings:
        return ViewSettings(self.level_span, self.change_span, self.outlier_z, self.z_clip)

    def to_json(self) -> dict:
        data = asdict(self)
        data["features"] = list(self.features)
        data["views"] = list(self.views)
        data["stat_views"] = list(self.stat_views)
        if self.limits is not None:
            data["limits"] = {k: list(v) for k, v in self.limits.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> DetectorConfig:
        return cls(**data)

    def describe(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


# Per-machine arrays the detector keeps itself (beside the fleet's, scaler's and views' own);
# one list, so what `arrays()` saves is exactly what `from_state()` restores.
_PER_MACHINE_ARRAYS = (
    "last_time",
    "interval",
    "last_value",
    "usual_low",
    "usual_high",
    "window_low",
    "window_high",
)


class FleetDetector:
    """Scores telemetry frames machine by machine, keeping every machine's model between calls.

    `engine` may be another engine factory (`detection_eval.river_engine.RiverEngine` runs
    River's own HalfSpaceTrees per model: the reference, slower, the same scores); only the
    NumPy engine's state can be saved.
    """

    def __init__(
        self, config: DetectorConfig | None = None, engine: str | EngineFactory = "numpy"
    ) -> None:
        self.config = config = config or DetectorConfig()
        width = len(config.features)
        self.fleet = Fleet(
            [f"{f}.{v}" for f in config.features for v in config.views] or config.features,
            n_trees=config.n_trees,
            height=config.height,
            window_size=config.window_size,
            seed=config.seed,
            engine=engine,
        )
        self.index = KeyIndex()
        driver = config.features.index(config.driver) if config.driver in config.features else None
        self.views = FeatureViews(config.view_settings, width, driver) if config.views else None
        self._hst_views = [VIEWS.index(v) for v in config.views]
        self._stat_views = [VIEWS.index(v) for v in config.stat_views]
        self.scaler: Scaler = (
            OnlineMinMaxScaler(width)
            if config.limits is None
            else LimitScaler(config.limits, config.features)
        )
        self.alarm = AlarmState()
        self.last_time = np.zeros(0, np.int64)  # last processed time per machine
        self.interval = np.zeros(0, np.int64)  # time between its last two readings, ns (0: none)
        self.last_value = np.zeros((0, width))  # last valid raw value (fills gaps)
        self.usual_low = np.zeros((0, width))  # raw mode: range of the last complete window
        self.usual_high = np.zeros((0, width))
        self.window_low = np.zeros((0, width))  # raw mode: range of the current window so far
        self.window_high = np.zeros((0, width))
        self.skipped = dict.fromkeys(STATUSES[1:], 0)

    @property
    def machines(self) -> list[str]:
        return self.index.keys

    @property
    def watermark(self) -> pd.Timestamp | None:
        """The latest data time processed for any machine (None before any point)."""
        if not len(self.last_time) or self.last_time.max() == NO_TIME:
            return None
        return pd.Timestamp(int(self.last_time.max()), tz="UTC")

    def _grow(self) -> None:
        """Give per-machine state (and models) to machines the index added."""
        count = len(self.index) - len(self.last_time)
        if count <= 0:
            return
        width = len(self.config.features)
        new = self.index.keys[len(self.last_time) :]
        self.fleet.rows(new)
        if self.views is not None:
            self.views.add_models(count)
        self.scaler.add_models(count)
        self.alarm.add_models(count)
        self.last_time = np.r_[self.last_time, np.full(count, NO_TIME, np.int64)]
        self.interval = np.r_[self.interval, np.zeros(count, np.int64)]
        nan = np.full((count, width), np.nan)
        for name in ("last_value", "usual_low", "usual_high", "window_low", "window_high"):
            setattr(self, name, np.concatenate([getattr(self, name), nan]))

    def score_frame(
        self, frame: pd.DataFrame, key: str = "unique_id", time: str = "time"
    ) -> pd.DataFrame:
        """Score (and learn) a frame of points from any machines; see the module doc."""
        for column in (key, time):
            if column not in frame.columns:
                raise KeyError(f"column {column!r} not in frame (columns: {list(frame.columns)})")
        features = list(self.config.features)
        out = frame.copy()
        for name in features:
            if name not in out.columns:
                out[name] = np.nan
        try:
            X = np.column_stack(
                [pd.to_numeric(out[name]).to_numpy(np.float64) for name in features]
            )
        except (ValueError, TypeError) as error:
            raise ValueError(f"feature columns {features} must be numeric: {error}") from None
        n = len(out)
        status = np.zeros(n, np.int8)  # index into STATUSES
        times = as_nanoseconds(pd.to_datetime(out[time], utc=True, errors="coerce"))
        status[times == NO_TIME] = STATUSES.index("bad_time")
        keys = out[key]
        status[keys.isna().to_numpy() & (status == 0)] = STATUSES.index("bad_key")
        valid = np.flatnonzero(status == 0)
        rows = np.full(n, -1, np.intp)
        rows[valid] = self.index.rows(keys.iloc[valid])
        self._grow()

        # Per machine, in time order: drop what is not newer than the last processed point.
        order = valid[np.lexsort((times[valid], rows[valid]))]
        r, t = rows[order], times[order]
        first = np.r_[True, r[1:] != r[:-1]][: len(r)]
        duplicate = ~first & (t == np.r_[NO_TIME, t[:-1]][: len(r)])
        stale = duplicate | (t <= self.last_time[r])
        status[order[stale]] = STATUSES.index("stale")
        live = order[~stale]
        after_gap = np.zeros(n, bool)
        after_gap[live] = self._after_gap(rows[live], times[live])
        self._note_times(rows[live], times[live])
        filled = self._fill(rows[live], X[live])
        complete = ~np.isnan(filled).any(axis=1)
        status[live[~complete]] = STATUSES.index("missing")
        scored = live[complete]
        X[scored] = filled[complete]

        result = {
            "score": np.full(n, np.nan),
            "warm": np.zeros(n, bool),
            "is_anomaly": np.zeros(n, bool),
            "in_episode": np.zeros(n, bool),
            "episode_start": np.zeros(n, bool),
            "episode_end": np.zeros(n, bool),
            "learned": np.zeros(n, bool),
        }
        deviations = np.full((n, len(features)), np.nan)
        if len(scored):
            self._score(
                scored,
                rows[scored],
                times[scored],
                X[scored],
                result,
                deviations,
                after_gap[scored],
            )
        for name, values in result.items():
            out[name] = values
        out["status"] = np.asarray(STATUSES, dtype=object)[status]
        for j, name in enumerate(features):
            out[f"dev_{name}"] = deviations[:, j]
        for name, count in zip(*np.unique(status[status > 0], return_counts=True), strict=True):
            self.skipped[STATUSES[name]] += int(count)
        return out

    def _after_gap(self, rows: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Which points (grouped by machine, in time order) follow a gap in their machine's
        data (a restart, an outage): they come more than `gap_seconds`, and more than
        `GAP_FACTOR` times the interval before, after the machine's previous reading (so a
        series sampled every 5 minutes has no gap at every reading). The last interval is
        carried per machine, so a stream split across runs finds the same gaps."""
        if self.config.gap_seconds is None or not len(rows):
            return np.zeros(len(rows), bool)
        first = np.r_[True, rows[1:] != rows[:-1]]
        previous = np.where(first, self.last_time[rows], np.r_[NO_TIME, times[:-1]])
        known = previous != NO_TIME
        dt = np.where(known, times - np.where(known, previous, times), 0)
        before = np.where(first, self.interval[rows], np.r_[0, dt[:-1]])
        limit = np.maximum(self.config.gap_ns, GAP_FACTOR * before)
        last = np.r_[first[1:], True]  # each machine's last point
        kept = last & known
        self.interval[rows[kept]] = dt[kept]
        return known & (before > 0) & (dt > limit)

    def _note_times(self, rows: np.ndarray, times: np.ndarray) -> None:
        if len(rows):
            np.maximum.at(self.last_time, rows, times)

    def _fill(self, rows: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Forward-fill NaN per machine (rows grouped, in time order) from each machine's
        last valid values, and remember the new last valid values."""
        if not len(rows):
            return X
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        X = X.copy()
        head = X[starts]
        X[starts] = np.where(np.isnan(head), self.last_value[rows[starts]], head)
        index = np.arange(len(rows))
        is_start = np.zeros(len(rows), bool)
        is_start[starts] = True
        for j in range(X.shape[1]):
            source = np.maximum.accumulate(np.where(~np.isnan(X[:, j]) | is_start, index, 0))
            X[:, j] = X[source, j]
        ends = np.r_[starts[1:], len(rows)] - 1
        last = X[ends]
        self.last_value[rows[ends]] = np.where(np.isnan(last), self.last_value[rows[ends]], last)
        return X

    def _score(
        self,
        points: np.ndarray,
        rows: np.ndarray,
        times: np.ndarray,
        X: np.ndarray,
        result: dict[str, np.ndarray],
        deviations: np.ndarray,
        after_gap: np.ndarray,
    ) -> None:
        """Test-then-train for points grouped by machine in time order, in rounds.

        A model's scores only change at its window pivot, but which points are learned (and
        so where the pivot falls) depends on the episode state, which depends on the scores.
        Each round scores up to a window of each machine's next points with the current
        tables, runs the alarm rule over them, and keeps them up to the point that fills the
        window; the rest wait for the next round and the new table.
        """
        config, fleet = self.config, self.fleet
        w, rule = config.window_size, config.rule
        if self.views is None:
            unit, spans = self.scaler.scale(rows, X)
            z = None
        else:
            unit, z = self.views.transform(rows, X, after_gap)
            unit = unit[:, :, self._hst_views].reshape(len(rows), -1)
            stat = self._stat_score(z)
        encoded = fleet.encode(unit, rows)
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        sizes = np.diff(np.r_[starts, len(rows)])
        machines = rows[starts]
        done = np.zeros(len(starts), np.int64)
        while (active := np.flatnonzero(done < sizes)).size:
            take = np.minimum(sizes[active] - done[active], w)
            local = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
            cand = np.repeat(starts[active] + done[active], take) + local
            cstarts = np.cumsum(take) - take
            group_rows = machines[active]
            warm = np.repeat(fleet.warm(group_rows), take)
            score = fleet.score(rows[cand], encoded[cand])
            if z is not None:
                score = np.where(warm, np.maximum(score, stat[cand]), 0.0)
            steps = self.alarm.step(
                rule, group_rows, cstarts, times[cand], warm & (score > config.threshold)
            )
            learned = np.ones(len(cand), bool) if config.learn_anomalies else ~steps["in_episode"]
            if config.accept_after_seconds is not None:
                # An episode this long is a new normal for the trees: they learn it again.
                age = times[cand] - steps["started"]
                learned |= age >= round(config.accept_after_seconds * 1e9)
            # Keep points up to the one that fills the window (the model pivots after it).
            need = np.repeat(w - fleet.window_fill(group_rows), take)
            running = np.cumsum(learned)
            running -= np.repeat(running[cstarts] - learned[cstarts], take)
            fills = np.where(learned & (running == need), local, np.iinfo(np.int64).max)
            pivot_at = np.minimum.reduceat(fills, cstarts)
            pivots = pivot_at < take
            keep_len = np.where(pivots, pivot_at + 1, take)
            keep = local < np.repeat(keep_len, take)

            kept = cand[keep]
            target = points[kept]
            result["score"][target] = score[keep]
            result["warm"][target] = warm[keep]
            result["learned"][target] = learned[keep]
            for name in ("is_anomaly", "in_episode", "episode_start", "episode_end"):
                result[name][target] = steps[name][keep]
            if z is None:
                deviations[target] = self._deviation(rows[kept], X[kept], spans[kept])
            else:
                deviations[target] = most_unusual(z[kept])
            self.alarm.commit(group_rows, steps, cstarts + keep_len - 1)
            study = cand[keep & learned]
            fleet.learn(rows[study], encoded[study])
            if z is None:
                self._note_window(rows[study], X[study], group_rows[pivots])
            done[active] += keep_len

    def _stat_score(self, z: np.ndarray) -> np.ndarray:
        """The statistical member: 0 while the largest |z| of the stat views over the
        features is below `z_alarm`; from there a band just above the threshold,
        `threshold + stat_band * (1 - threshold) * (1 - z_alarm / |z|)`. So a z past
        `z_alarm` always alerts, yet ranks below the trees' strong scores: the trees keep
        the order of the scores (what NAB ranks), the z-scores hold sustained faults open."""
        if not self._stat_views:
            return np.zeros(len(z))
        worst = np.abs(z[:, :, self._stat_views]).max(axis=(1, 2))
        config = self.config
        alarm = worst >= config.z_alarm
        with np.errstate(divide="ignore"):
            strength = 1.0 - config.z_alarm / worst
        band = config.threshold + config.stat_band * (1.0 - config.threshold) * strength
        # Just above the threshold at z_alarm itself (scores alert when above it).
        return np.where(alarm, np.maximum(band, np.nextafter(config.threshold, 1.0)), 0.0)

    def _deviation(self, rows: np.ndarray, X: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """Raw mode: (x - clip(x, usual low, usual high)) / span; NaN without a usual range."""
        above = X - self.usual_high[rows]
        np.maximum(above, 0.0, out=above)
        below = X - self.usual_low[rows]
        np.minimum(below, 0.0, out=below)
        above += below
        above /= spans
        return above

    def _note_window(self, rows: np.ndarray, X: np.ndarray, pivoted: np.ndarray) -> None:
        """Track each window's value range; at a pivot it becomes the usual range."""
        for j in range(X.shape[1]):
            np.fmin.at(self.window_low[:, j], rows, X[:, j])
            np.fmax.at(self.window_high[:, j], rows, X[:, j])
        if len(pivoted):
            self.usual_low[pivoted] = self.window_low[pivoted]
            self.usual_high[pivoted] = self.window_high[pivoted]
            self.window_low[pivoted] = np.nan
            self.window_high[pivoted] = np.nan

    # -- persistence (see fleetwatch.state) --------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        """Every per-machine array of the detector's state, by name."""
        masses = self.fleet.masses()
        structure = self.fleet.structure
        arrays = {
            "split_column": structure.split_column,
            "split_threshold": structure.split_threshold,
            **{f"masses_{k}": v for k, v in masses.state().items()},
            **{f"scaler_{k}": v for k, v in self.scaler.state().items()},
            **{f"views_{k}": v for k, v in (self.views.state() if self.views else {}).items()},
            **self.alarm.state(),
        }
        for name in _PER_MACHINE_ARRAYS:
            arrays[name] = getattr(self, name)
        return arrays

    def meta(self) -> dict:
        """The JSON part of the detector's state."""
        return {"config": self.config.to_json(), "machines": self.machines, "skipped": self.skipped}

    @classmethod
    def from_state(cls, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> FleetDetector:
        """Rebuild a detector from `meta()` and `arrays()`; raises ValueError if inconsistent."""
        detector = cls(DetectorConfig.from_json(meta["config"]))
        structure = detector.fleet.structure
        if not (
            np.array_equal(arrays["split_column"], structure.split_column)
            and np.array_equal(arrays["split_threshold"], structure.split_threshold)
        ):
            raise ValueError("the saved trees differ from the trees this configuration grows")
        machines = [str(m) for m in meta["machines"]]
        if len(machines) != len(set(machines)):
            raise ValueError("duplicate machine keys")
        detector.index.rows(np.array(machines, dtype=object))
        detector._grow()
        detector.fleet.masses().restore(
            {k[7:]: v for k, v in arrays.items() if k.startswith("masses_")}
        )
        detector.scaler.restore({k[7:]: v for k, v in arrays.items() if k.startswith("scaler_")})
        if detector.views is not None:
            detector.views.restore({k[6:]: v for k, v in arrays.items() if k.startswith("views_")})
        detector.alarm.restore(arrays)
        count = len(machines)
        for name in _PER_MACHINE_ARRAYS:
            value = np.asarray(arrays[name])
            if len(value) != count or value.shape[1:] != getattr(detector, name).shape[1:]:
                raise ValueError(f"{name} has shape {value.shape} for {count} machines")
            setattr(detector, name, value.copy())
        views = detector.views.count if detector.views is not None else np.zeros(count)
        if (
            len(detector.fleet.masses().counter) != count
            or len(detector.alarm.run) != count
            or len(views) != count
        ):
            raise ValueError("model arrays do not match the number of machines")
        detector.skipped = {k: int(meta["skipped"].get(k, 0)) for k in STATUSES[1:]}
        return detector


def most_unusual(z: np.ndarray) -> np.ndarray:
    """Per point and feature, the z-score of the feature's most unusual view (signed).

    >>> most_unusual(np.array([[[1.0, -4.0], [2.0, 0.5]]])).tolist()
    [[-4.0, 2.0]]
    """
    pick = np.abs(z).argmax(axis=2)[..., None]
    return np.take_along_axis(z, pick, axis=2)[..., 0]
