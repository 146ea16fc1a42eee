"""`FleetDetector`: one Half-Space Trees model per machine, scoring frames of telemetry.

What the upstream demo did per run (a new model per machine, power only, batch min-max,
learn-then-score, `score > 0.8` point by point) becomes a detector that keeps its state:

* one model per series key, all sharing tree structure (`fleetwatch.fleet`); unseen machines
  get a fresh model on their first point;
* features `load, vibration, power, temperature` by default, each seen through online views
  (`fleetwatch.views`, with a noise floor and, for slow series with a daily cycle, a daily
  profile). The score joins two parts:
  - the *news*: how surprising the reading is, as -ln of a tail probability learned per
    machine (`fleetwatch.calibration`) from the views' steps and shifts and from the trees'
    score on the views' levels and steps (Fisher's method joins the two), kept only where it
    adds to what the machine just saw (`fleetwatch.refractory`) and to what it showed at this
    time on earlier days (`fleetwatch.recurrence`), mapped onto [0, 1);
  - a statistical band: once a sensor's level, stuck run or load-fit residual passes
    `z_alarm` deviations, a score just above the threshold that grows with the deviation;
  the larger of the two. `views=()` is the raw mode (one model over the values, scaled by
  physical limits or an online min-max, `fleetwatch.scaling`). Never scaled by the batch;
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

from fleetwatch.calibration import TailCalibration
from fleetwatch.episodes import NO_TIME, AlarmRule, AlarmState, as_nanoseconds
from fleetwatch.fleet import EngineFactory, Fleet, KeyIndex
from fleetwatch.machine_rules import MachineRule, RuleTable, lead_features
from fleetwatch.recurrence import DailyRecurrence
from fleetwatch.refractory import Refractory
from fleetwatch.scaling import LimitScaler, OnlineMinMaxScaler, Scaler
from fleetwatch.views import VIEWS, FeatureViews, ViewSettings, positions

__all__ = ["DEFAULT_FEATURES", "NAMED_CONFIGS", "DetectorConfig", "FleetDetector"]

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
    views: tuple[str, ...] = ("level", "change")
    stat_views: tuple[str, ...] = ("level", "still", "fit")
    news_views: tuple[str, ...] = ("change", "shift")
    driver: str | None = "load"
    z_alarm: float = 5.0
    stat_band: float = 0.25
    level_span: int = 600
    change_span: int = 100
    shift_span: int = 150
    outlier_z: float = 3.0
    z_clip: float = 8.0
    quanta: float = 1.0
    season_bins: int = 96
    joint_smooth: int = 1
    level_rule: str = "regime"
    calibrate: bool = True
    calibration_span: int = 5000
    refractory_half_life: float = 20.0
    recurrence_bins: int = 288
    recurrence_decay: float = 0.5
    news_scale: float = 0.6
    limits: Mapping[str, tuple[float, float]] | None = None
    trees: bool = True
    combine: str = "fisher"
    n_trees: int = 50
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
        object.__setattr__(self, "news_views", tuple(self.news_views))
        for name in (*self.views, *self.stat_views, *self.news_views):
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
        if not self.views and (self.stat_views or self.news_views):
            raise ValueError(
                "stat_views and news_views join the views mode; the raw mode (views=()) has none"
            )
        if self.news_views and not self.calibrate:
            raise ValueError("news_views are calibrated surprises: they need calibrate=True")
        if not (self.news_scale > 0 and self.refractory_half_life >= 0):
            raise ValueError("news_scale must be > 0 and refractory_half_life >= 0")
        if self.recurrence_bins < 0 or not 0.0 < self.recurrence_decay < 1.0:
            raise ValueError("recurrence_bins must be >= 0 and recurrence_decay in (0, 1)")
        if self.combine not in ("fisher", "max"):
            raise ValueError("combine must be 'fisher' or 'max'")
        if self.calibration_span < 1:
            raise ValueError("calibration_span must be >= 1")
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
        views = {*self.views, *self.stat_views, *self.news_views}
        return ViewSettings(
            self.level_span,
            self.change_span,
            self.outlier_z,
            self.z_clip,
            self.shift_span,
            self.quanta,
            self.season_bins,
            joint="joint" in views,
            joint_smooth=self.joint_smooth,
            level_rule=self.level_rule,
        )

    def to_json(self) -> dict:
        data = asdict(self)
        data["features"] = list(self.features)
        data["views"] = list(self.views)
        data["stat_views"] = list(self.stat_views)
        data["news_views"] = list(self.news_views)
        if self.limits is not None:
            data["limits"] = {k: list(v) for k, v in self.limits.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> DetectorConfig:
        return cls(**data)

    def describe(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    def ablations(self) -> dict[str, dict]:
        """Each member of this configuration's score and the settings that remove it (the
        evaluations' ablation table): the trees, every view the statistical member watches,
        every news view, and the news path's parts (calibration, refractory period, recurring
        surprise, daily profile, noise floor) where they are on."""
        members: dict[str, dict] = {"trees": {"trees": False}} if self.trees else {}
        for entry in self.stat_views:
            members[entry] = {"stat_views": [e for e in self.stat_views if e != entry]}
        for entry in self.news_views:
            members[f"{entry} news"] = {"news_views": [e for e in self.news_views if e != entry]}
        if self.calibrate:
            members["calibration"] = {"calibrate": False, "news_views": []}
        if self.calibrate and self.refractory_half_life:
            members["refractory period"] = {"refractory_half_life": 0.0}
            if self.recurrence_bins:
                members["recurring surprise"] = {"recurrence_bins": 0}
        if self.season_bins:
            members["daily profile"] = {"season_bins": 0}
        if self.quanta:
            members["noise floor"] = {"quanta": 0.0}
        return members


#: Configurations runnable by name. `previous`: the defaults of state format 3 (trees' raw
#: score beside a statistical band; no noise floor, daily profile, joint view, calibration or
#: refractory period), kept for comparisons (`--detector previous` in the evaluations).
NAMED_CONFIGS: dict[str, dict] = {
    "previous": {
        "n_trees": 25,
        "views": ("change",),
        "stat_views": ("level", "still", "fit"),
        "news_views": (),
        "quanta": 0.0,
        "season_bins": 0,
        "calibrate": False,
        "refractory_half_life": 0.0,
        "level_rule": "clip",
        "combine": "max",
    },
}

#: The trees' raw score enters calibration as -ln(1 - score), capped here.
TREE_SCORE_CAP = 1.0 - 1e-9
#: Priors of the calibration: view channels are z**2 / 2 (Gaussian: 5 % above 1.92, mean
#: excess 1); the trees' -ln(1 - score) (healthy machines score up to ~0.75: 1.39).
VIEW_PRIOR = (1.92, 1.0)
TREE_PRIOR = (1.39, 0.3)

# Per-machine arrays the detector keeps itself (beside the fleet's, scaler's and views' own);
# one list, so what `arrays()` saves is exactly what `from_state()` restores.
_PER_MACHINE_ARRAYS = (
    "tree_window",
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
        self._news_views = [VIEWS.index(v) for v in config.news_views]
        # The views a deviation is reported from: those the detector uses.
        used = {*config.views, *config.stat_views, *config.news_views}
        self._shown_views = [i for i, v in enumerate(VIEWS) if v in used]
        # Sensors whose level the fit view replaces in the statistical member (see there).
        self._explained = (
            [j for j in range(width) if j != driver]
            if driver is not None
            and {"fit", "level"} <= set(config.stat_views)
            and config.level_rule == "regime"
            else None
        )
        calibrated = config.calibrate and bool(config.views)
        channels = width * len(self._news_views)
        self.news = (
            TailCalibration(
                [VIEW_PRIOR[0]] * channels, [VIEW_PRIOR[1]] * channels, span=config.calibration_span
            )
            if calibrated and channels
            else None
        )
        self.tree_calibration = (
            TailCalibration([TREE_PRIOR[0]], [TREE_PRIOR[1]], span=config.calibration_span)
            if calibrated
            else None
        )
        # Channels the views' news is the most surprising of (a Bonferroni correction).
        self._channels = max(channels, 1)
        self.refractory = (
            Refractory(config.refractory_half_life)
            if calibrated and config.refractory_half_life > 0
            else None
        )
        self.recurrence = (
            DailyRecurrence(config.recurrence_bins, config.recurrence_decay)
            if self.refractory is not None and config.recurrence_bins
            else None
        )
        # The trees' scores of the current window, summed for their calibration at the pivot.
        self.tree_window = np.zeros((0, 5))
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
        for part in (self.news, self.tree_calibration, self.refractory, self.recurrence):
            if part is not None:
                part.add_models(count)
        self.tree_window = np.concatenate([self.tree_window, np.zeros((count, 5))])
        self.last_time = np.r_[self.last_time, np.full(count, NO_TIME, np.int64)]
        self.interval = np.r_[self.interval, np.zeros(count, np.int64)]
        nan = np.full((count, width), np.nan)
        for name in ("last_value", "usual_low", "usual_high", "window_low", "window_high"):
            setattr(self, name, np.concatenate([getattr(self, name), nan]))

    def score_frame(
        self,
        frame: pd.DataFrame,
        key: str = "unique_id",
        time: str = "time",
        rules: Mapping[str, MachineRule] | None = None,
    ) -> pd.DataFrame:
        """Score (and learn) a frame of points from any machines; see the module doc.

        `rules` (by key) change one machine's threshold or persistence, or raise its threshold
        for points led by one feature (`fleetwatch.machine_rules`); scores stay the same.
        """
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
        found_by = np.full((n, len(features)), -1, np.int64)  # index into VIEWS, -1: raw mode
        if len(scored):
            table = RuleTable(
                rules, self.machines, features, self.config.threshold, self.config.persistence
            )
            self._score(
                scored,
                rows[scored],
                times[scored],
                X[scored],
                result,
                deviations,
                found_by,
                after_gap[scored],
                table,
            )
        for name, values in result.items():
            out[name] = values
        out["status"] = np.asarray(STATUSES, dtype=object)[status]
        names = np.asarray([*VIEWS, "raw"], dtype=object)
        for j, name in enumerate(features):
            out[f"dev_{name}"] = deviations[:, j]
            out[f"dev_view_{name}"] = np.where(
                np.isnan(deviations[:, j]), None, names[found_by[:, j]]
            )
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
        found_by: np.ndarray,
        after_gap: np.ndarray,
        table: RuleTable,
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
            unit, z, t2 = self.views.transform(rows, X, times, after_gap)
            unit = unit[:, :, self._hst_views].reshape(len(rows), -1)
            stat = self._stat_score(z, t2)
            view_news = self._view_news(rows, z)
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
            raw = fleet.score(rows[cand], encoded[cand])
            if not config.trees:
                raw = np.zeros(len(cand))
            memory = joined = None
            if z is None:
                score = raw
            elif self.tree_calibration is None:
                score = np.where(warm, np.maximum(raw, stat[cand]), 0.0)
            else:
                tree = self._tree_surprise(rows[cand], raw)
                surprise = self._combine(view_news[cand], tree)
                surprise = np.where(warm, np.maximum(surprise, 0.0), 0.0)
                joined = surprise
                if self.refractory is not None:
                    floor = (
                        None
                        if self.recurrence is None
                        else self.recurrence.baseline(rows[cand], times[cand], joined)
                    )
                    surprise, memory = self.refractory.discount(
                        rows[cand], cstarts, joined, after_gap[cand], floor
                    )
                news = surprise / (surprise + config.news_scale)
                score = np.where(warm, np.maximum(news, stat[cand]), 0.0)
            if z is None:
                unusual, which = self._deviation(rows[cand], X[cand], spans[cand]), None
            else:
                unusual, which = most_unusual(z[cand][:, :, self._shown_views])
            limit = table.limits(rows[cand], lead_features(unusual))
            steps = self.alarm.step(
                rule,
                group_rows,
                cstarts,
                times[cand],
                warm & (score > limit),
                table.persistence(group_rows),
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
            deviations[target] = unusual[keep]
            if which is not None:
                found_by[target] = np.asarray(self._shown_views)[which[keep]]
            last = cstarts + keep_len - 1
            self.alarm.commit(group_rows, steps, last)
            if memory is not None:
                self.refractory.commit(group_rows, memory[last])
            if joined is not None and self.recurrence is not None:
                self.recurrence.learn(rows[kept], times[kept], joined[keep])
            study = cand[keep & learned]
            if self.tree_calibration is not None:
                self._note_tree_scores(rows[study], raw[keep & learned], warm[keep & learned])
            fleet.learn(rows[study], encoded[study])
            if self.tree_calibration is not None and pivots.any():
                self._calibrate_trees(group_rows[pivots])
            if z is None:
                self._note_window(rows[study], X[study], group_rows[pivots])
            done[active] += keep_len

    def _view_news(self, rows: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The views' news per point: the largest calibrated surprise over the features'
        news views (`fleetwatch.calibration`), each learned test-then-train, machine by
        machine in time order. A step counts only upwards (a smaller step than usual is not
        news); a shift both ways."""
        news = np.zeros(len(rows))
        if self.news is None:
            return news
        picked = z[:, :, self._news_views]
        if "change" in self.config.news_views:
            change = self.config.news_views.index("change")
            picked[:, :, change] = np.maximum(picked[:, :, change], 0.0)
        raw = 0.5 * picked.reshape(len(rows), -1) ** 2
        for machines, at in positions(rows):
            news[at] = self.news.step(machines, raw[at]).max(axis=1)
        return news

    def _combine(self, views: np.ndarray, tree: np.ndarray) -> np.ndarray:
        """The views' and the trees' surprise as one: Fisher's method for two independent
        tail probabilities, `T - ln(1 + T)` with `T` their summed surprise (Fisher,
        Statistical Methods for Research Workers, 1932, sec. 21.1); the views' surprise is
        already the largest of their channels, less ln(channels) (a Bonferroni
        correction). `combine="max"` takes the larger of the two instead."""
        views = np.maximum(views - np.log(self._channels), 0.0)
        if self.config.combine == "max":
            return np.maximum(views, tree)
        total = views + tree
        return total - np.log1p(total)

    def _tree_surprise(self, rows: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """The trees' score as a calibrated surprise; the calibration changes only at the
        window pivots (as the trees' scores do), so any split of the stream gives the same."""
        r = -np.log1p(-np.minimum(raw, TREE_SCORE_CAP))
        return self.tree_calibration.surprise(rows, r[:, None])[:, 0]

    def _note_tree_scores(self, rows: np.ndarray, raw: np.ndarray, warm: np.ndarray) -> None:
        """Add the learned points' tree scores to their machine's window sums (warm only)."""
        rows, raw = rows[warm], raw[warm]
        r = -np.log1p(-np.minimum(raw, TREE_SCORE_CAP))
        terms = self.tree_calibration.window_terms(rows, r[:, None])[:, :, 0]
        np.add.at(self.tree_window, rows, terms)

    def _calibrate_trees(self, machines: np.ndarray) -> None:
        """At a pivot: learn the window's tree scores, and start the next window's sums."""
        self.tree_calibration.learn_window(machines, self.tree_window[machines][:, :, None])
        self.tree_window[machines] = 0.0

    def _stat_score(self, z: np.ndarray, t2: np.ndarray) -> np.ndarray:
        """The statistical member: 0 while the largest |z| of the stat views over the
        features (and the joint T-squared, with the `joint` view) is below `z_alarm`; from
        there a band just above the threshold,
        `threshold + stat_band * (1 - threshold) * (1 - z_alarm / |z|)`. So a z past
        `z_alarm` always alerts and a larger one scores higher, yet ranks below strong news:
        the news keeps the order of the scores (what NAB ranks), the z-scores hold sustained
        faults open."""
        if not self._stat_views:
            return np.zeros(len(z))
        watched = np.abs(z[:, :, self._stat_views])
        if self._explained is not None:
            # A sensor the driver explains is judged by its fit, not by its raw level.
            watched[:, self._explained, self.config.stat_views.index("level")] = 0.0
        worst = watched.max(axis=(1, 2))
        if "joint" in self.config.stat_views:
            worst = np.maximum(worst, t2)
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
            **{
                f"{prefix}_{k}": v
                for prefix, part in self._parts().items()
                for k, v in part.state().items()
            },
        }
        for name in _PER_MACHINE_ARRAYS:
            arrays[name] = getattr(self, name)
        return arrays

    def _parts(self) -> dict:
        """The news path's per-machine models, by the prefix of their saved arrays."""
        parts = {
            "news": self.news,
            "trees": self.tree_calibration,
            "refractory": self.refractory,
            "recurrence": self.recurrence,
        }
        return {prefix: part for prefix, part in parts.items() if part is not None}

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
        for prefix, part in detector._parts().items():
            part.restore(
                {k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + "_")}
            )
            if any(len(v) != len(machines) for v in part.state().values()):
                raise ValueError(f"{prefix} arrays do not match the number of machines")
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


def most_unusual(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point and feature, the z-score of the feature's most unusual view (signed), and
    which view it is (index along the last axis).

    >>> [a.tolist() for a in most_unusual(np.array([[[1.0, -4.0], [2.0, 0.5]]]))]
    [[[-4.0, 2.0]], [[1, 0]]]
    """
    pick = np.abs(z).argmax(axis=2)
    return np.take_along_axis(z, pick[..., None], axis=2)[..., 0], pick
