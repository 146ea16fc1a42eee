"""Feature views: what each sensor looks like to the detector, computed online.

Half-Space Trees judge a point by how crowded its region of the unit box was in the last
window. On a sensor's raw value (the upstream demo) that sees a value outside the usual range
and little else: a jump that stays inside the range, a flat-lined sensor or a slow drift look
normal. Each sensor is therefore seen through six *views*, each a z-score against the
sensor's own running statistics:

* `level`: the value itself, against a robust exponentially weighted mean and variance over
  `level_span` readings (a sustained shift: overload, bearing wear, drift); against the
  usual value at this time of day instead where a daily profile is active (below);
* `change`: the size of the step from the previous reading, |x_t - x_(t-1)|, against a plain
  exponentially weighted mean and variance over `change_span` readings (a spike or a jump,
  whatever the level); the step of the residual from the daily profile where it is active;
* `still`: how surprising the current run of unchanged readings is (a stuck sensor): with p
  the running share of readings equal to the one before (over `level_span` readings), a run
  continues with chance c = `run_chance(p)` >= p (a value that keeps repeating is likely the
  sensor's most common one, which repeats more often than the average value does), so a run
  of k has chance c**k, reported as the normal z with the same tail, sqrt(2 k ln(1/c)).
* `fit` (only with a *driver*, the feature the others follow, e.g. `load`): the sensor minus
  what an online per-machine regression on the driver predicts, against the running variance
  of that residual. The level's spread includes the load-driven swings (temperature: several
  degrees), the residual's only the noise (~0.2 degree), so a slow drift or a stuck sensor is
  many deviations within seconds. Regressors: 1, the driver, and the driver through
  first-order lags of `DRIVER_LAGS` readings (sensors follow load with a lag); the fit is
  exponentially weighted least squares over `level_span` readings (sufficient statistics,
  a tiny ridge), tested before it learns each reading. An outlying residual (past
  `outlier_z`, after `MIN_POINTS` readings) teaches the fit nothing, so a fault stays
  visible and the fit is right again when it ends; when outliers outnumber inliers over
  `level_span` readings (a leaky count) the fit learns them: a new regime. The residual's
  variance starts after `MIN_POINTS / 2` readings, once the fit has seen some cycles. The
  driver itself, and every sensor when there is no driver (one series), has `fit` = 0.
* `shift`: the value (or its residual from the daily profile) against a short EW mean over
  `shift_span` readings, in units of how far readings usually stray from it (remembered
  `SHIFT_VAR_SPANS` times longer). Not robust: a new level is news for about `shift_span`
  readings, then it is the recent mean (a jump, a dip, a burst, whatever the long level).
* `joint` (with two or more sensors, `fleetwatch.joint`): each sensor's level against what
  the other sensors' levels predict for it, from their running robust covariance; the same
  covariance gives Hotelling's T-squared of the reading, returned beside the views.

Scaling is online, never over a batch: the statistics *before* each point give its z. Every
view divides by at least the sensor's noise floor (`fleetwatch.noise_floor`, `quanta` times
its resolution): a one-quantum step on a flat series is one deviation, not eight. The level
is robust: a point more than `outlier_z` deviations from the mean teaches it nothing until
such points outnumber the others over `level_span` readings (a leaky count, as for the
fit): then it is a new regime, learned in full. So a fault shorter than that stays as far out
as it is and the level is right again when it ends. (`level_rule="clip"`, the rule of state
format 3: an outlier moves the mean by at most `outlier_z` deviations times the weight, so a
fault is slowly absorbed.) The change and shift views are deliberately not robust: after a
jump their variance grows, so the jump is news once, not for the next hundred readings.
For the trees, z is clipped to +-`z_clip` and mapped onto [0, 1] (`0.5 + z / (2 z_clip)`).

The daily profile (`fleetwatch.seasonal`, `season_bins` phases of the UTC day, from the
readings' timestamps) is used per sensor only while it explains the steps better than the
previous reading does: series with a daily cycle sampled every few minutes, not 1 Hz
telemetry.

Everything is carried per machine (`state`/`restore`), so a stream split across runs gives
the same views as one run. Points are processed grouped by machine, in time order; the loop
runs over positions within a batch, vectorized across machines (60 steps for a one-minute
batch of a whole fleet).

>>> views = FeatureViews(ViewSettings(), n_features=1)
>>> views.add_models(1)
>>> x = np.r_[np.tile([10.0, 11.0], 50), 30.0, 30.0, 30.0][:, None]
>>> unit, z, t2 = views.transform(np.zeros(len(x), np.intp), x)
>>> # the jump: 19.5 units out in level, step and shift (the spread, 0.5, floored at the
>>> # resolution, 1)
>>> unit.shape, [round(float(v), 1) for v in z[100, 0]]
((103, 1, 6), [19.5, 18.0, 0.0, 0.0, 19.5, 0.0])
>>> [round(float(v), 1) for v in z[102, 0]]  # held: the level still out, the step over
[19.5, -0.5, 1.7, 0.0, 6.3, 0.0]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from fleetwatch.joint import JointView
from fleetwatch.linalg import solve_positive
from fleetwatch.noise_floor import NoiseFloor
from fleetwatch.seasonal import DailyProfile

__all__ = ["VIEWS", "FeatureViews", "ViewSettings", "run_chance"]

VIEWS = ("level", "change", "still", "fit", "shift", "joint")
# Readings before the outlier rule applies: the variance must know the usual swings first.
MIN_POINTS = 100
#: The shift view's spread is remembered this many times longer than its mean.
SHIFT_VAR_SPANS = 10
#: Time constants (readings) of the driver's first-order lags the `fit` view regresses on:
#: fast sensors (power, vibration: a few seconds) and slow ones (temperature: ~45 s at 1 Hz).
DRIVER_LAGS = (3.0, 45.0)
#: The fewest readings the `fit` view stays silent after a gap while the driver's lags catch up (three
#: time constants of the slowest lag: the lag's error is down to 5 %).
FIT_SETTLE = round(3 * max(DRIVER_LAGS))
#: The most readings the `fit` view stays silent after a gap, however far the sensors start
#: from the fit (ten time constants of the slowest lag).
FIT_SETTLE_MAX = round(10 * max(DRIVER_LAGS))
RIDGE = 1e-6  # relative ridge on the fit's normal equations: never singular, barely biased
P_BOUNDS = (1e-3, 0.999)  # the estimated chance of an unchanged reading stays inside these


@dataclass(frozen=True)
class ViewSettings:
    """How the views are scaled (see the module doc). `quanta` = 0 turns the noise floor
    off, `season_bins` = 0 the daily profile, `joint=False` the joint view (the views of
    format 3)."""

    level_span: int = 600
    change_span: int = 100
    outlier_z: float = 3.0
    z_clip: float = 8.0
    shift_span: int = 30
    quanta: float = 1.0
    season_bins: int = 96
    joint: bool = True
    joint_smooth: int = 1
    level_rule: str = "regime"

    def __post_init__(self) -> None:
        for name in ("level_span", "change_span", "shift_span", "joint_smooth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not (self.outlier_z > 0 and self.z_clip > 0):
            raise ValueError("outlier_z and z_clip must be > 0")
        if self.level_rule not in ("regime", "clip"):
            raise ValueError("level_rule must be 'regime' or 'clip'")
        if self.quanta < 0:
            raise ValueError("quanta must be >= 0 (0: no noise floor)")
        if self.season_bins != 0 and self.season_bins < 2:
            raise ValueError("season_bins must be 0 (no daily profile) or >= 2")


def _settle_after_gap(
    residual: np.ndarray, sd: np.ndarray, ready: np.ndarray, driver: int
) -> np.ndarray:
    """Readings the `fit` view stays silent after a gap, per machine. The driver's lags
    restart from its current value, as if the machine had run at that load all along; a
    machine that stopped (cooled) during the gap reads far from that prediction, and the
    error fades with the slowest lag: after k readings it is about r0 * exp(-k / tau), with r0
    the first reading's residual. So: at least `FIT_SETTLE` readings, and as many more as the
    largest first residual needs to fade below one deviation of the residual,
    tau * ln(|r0| / sd) (a restart's jump of 50 deviations is 5 deviations after 3 tau, not
    noise yet), at most `FIT_SETTLE_MAX`."""
    tau = max(DRIVER_LAGS)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ready & (sd > 0), np.abs(residual) / sd, 0.0)
    ratio[:, driver] = 0.0
    needed = np.ceil(tau * np.log(np.maximum(ratio.max(axis=1), 1.0)))
    return np.clip(needed, FIT_SETTLE, FIT_SETTLE_MAX).astype(np.int64)


def run_chance(p: np.ndarray) -> np.ndarray:
    """The chance that a run of unchanged readings goes on, from `p`, the chance that a reading
    equals the one before it (both for a healthy sensor).

    A reading is a noisy value rounded to the sensor's resolution q. Two readings are equal
    with chance p = sum_b P_b**2 over the values b the noise reaches; a run of them is a run
    of one value, and it goes on with *that* value's chance P_b. The value a run repeats is
    most likely the most common one, so a run goes on with a chance up to max_b P_b, not p:
    with Gaussian noise of spread s >> q, p = q / (2 sqrt(pi) s) and the most common value
    (the level in the middle of its step) has erf(q / (2 sqrt(2) s)) = erf(sqrt(pi / 2) p),
    about 1.4 p. Taking p itself for the run (as before) made a healthy run of 10 look like a
    z of 5.6: on the simulator's temperature (0.1 degree steps, noise 0.15 degree; p 0.18-0.21)
    runs of 6, 7 and 8 readings were 2.4, 3.3 and 3.8 times as common as p**k said, and a run
    of 10 on a flat stretch opened an episode. Never below p (a run is at least as likely to
    go on as any reading to repeat: max_b P_b >= sum_b P_b**2); for a sensor that rarely
    changes (p near 1) it is p. Values outside `P_BOUNDS` are clipped into them first.

    >>> [round(float(c), 3) for c in run_chance(np.array([0.02, 0.18, 0.5, 0.95]))]
    [0.028, 0.25, 0.625, 0.95]
    """
    grid, chances = _run_chance_table()
    return np.interp(np.clip(p, *P_BOUNDS), grid, chances)


@functools.cache
def _run_chance_table() -> tuple[np.ndarray, np.ndarray]:
    """`run_chance` tabulated over P_BOUNDS (np.interp between the points: error < 1e-10),
    built on first use: 100,001 erf calls (~17 ms) that a process which never scores (the
    operator tool, the fleet page) need not pay when it imports the views."""
    grid = np.linspace(*P_BOUNDS, 100_001)
    return grid, np.maximum(grid, [math.erf(math.sqrt(math.pi / 2.0) * p) for p in grid])


def positions(rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For points grouped by machine (`rows`), step by step: the machines that have a k-th
    point and where those points are (k = 0, 1, ...). Online models run one step per
    position, vectorized across machines (60 steps for a one-minute batch of a fleet).

    >>> [(m.tolist(), at.tolist()) for m, at in positions(np.array([4, 4, 4, 7]))]
    [([4, 7], [0, 3]), ([4], [1]), ([4], [2])]
    """
    rows = np.asarray(rows, np.intp)
    if not len(rows):
        return
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)])
    machines = rows[starts]
    by_size = np.argsort(-sizes, kind="stable")  # longest groups first
    for k in range(int(sizes.max())):
        live = by_size[: np.searchsorted(-sizes[by_size], -k, side="left")]
        yield machines[live], starts[live] + k


class FeatureViews:
    """Per machine and sensor: the views of each new reading, scaled online (module doc)."""

    STATE = (
        "previous",
        "still",
        "p_still",
        "count",
        "mean",
        "var",
        "recent",
        "recent_var",
        "level_run",
        "lagged",
        "gram",
        "moment",
        "theta",
        "fit_var",
        "fit_run",
        "fit_settle",
    )

    def __init__(self, settings: ViewSettings, n_features: int, driver: int | None = None) -> None:
        if driver is not None and not 0 <= driver < n_features:
            raise ValueError(f"driver {driver} is not one of the {n_features} features")
        self.settings = settings
        self.n_features = n_features
        self.driver = driver
        width = 2 + len(DRIVER_LAGS)  # regressors: 1, the driver, its lags
        self.previous = np.zeros((0, n_features))  # last reading (NaN: none yet)
        self.still = np.zeros((0, n_features))  # readings since the value last changed
        self.p_still = np.zeros((0, n_features))  # EWMA of "unchanged" (chance of a repeat)
        self.count = np.zeros(0, np.int64)  # readings taken in
        # Running statistics of: the level, the step, and both against the daily profile.
        self.mean = np.zeros((0, n_features, 4))
        self.var = np.zeros((0, n_features, 4))
        self.level_run = np.zeros((0, n_features, 2))  # leaky count of outlying levels
        self.recent = np.zeros((0, n_features))  # the shift view's short EW mean
        self.recent_var = np.zeros((0, n_features))  # EW mean square of x - recent
        self.lagged = np.zeros((0, len(DRIVER_LAGS)))  # the driver through each lag
        self.gram = np.zeros((0, width, width))  # EW mean of regressors' outer products
        self.moment = np.zeros((0, n_features, width))  # EW mean of sensor x regressors
        self.theta = np.zeros((0, n_features, width))  # the fit after the last reading
        self.fit_var = np.zeros((0, n_features))  # EW variance of the fit's residual
        self.fit_run = np.zeros((0, n_features))  # leaky count of recent outlying residuals
        self.fit_settle = np.zeros(0, np.int64)  # readings the fit stays silent after a gap
        spans = [settings.level_span, settings.change_span] * 2
        self._alpha = 2.0 / (np.array(spans) + 1.0)
        self._robust = np.array([True, False, True, False])  # the outlier rule: levels only
        self._p_alpha = 2.0 / (settings.level_span + 1.0)
        self._shift_alpha = 2.0 / (settings.shift_span + 1.0)
        self._shift_var_alpha = 2.0 / (SHIFT_VAR_SPANS * settings.shift_span + 1.0)
        self._lag_alpha = 1.0 - np.exp(-1.0 / np.array(DRIVER_LAGS))
        self.floor = NoiseFloor(n_features, settings.quanta) if settings.quanta > 0 else None
        self.season = (
            DailyProfile(n_features, settings.season_bins, settings.outlier_z)
            if settings.season_bins
            else None
        )
        self.joint = (
            JointView(n_features, settings.level_span, settings.outlier_z, settings.joint_smooth)
            if settings.joint and n_features > 1
            else None
        )

    def parts(self) -> dict[str, object]:
        """The sub-models whose state is saved beside this object's own arrays."""
        return {
            name: part
            for name, part in (
                ("floor", self.floor),
                ("season", self.season),
                ("joint", self.joint),
            )
            if part is not None
        }

    def add_models(self, count: int) -> None:
        shape = (count, self.n_features)
        width = self.gram.shape[1]
        self.previous = np.concatenate([self.previous, np.full(shape, np.nan)])
        self.still = np.concatenate([self.still, np.zeros(shape)])
        self.p_still = np.concatenate([self.p_still, np.full(shape, 0.5)])
        self.count = np.r_[self.count, np.zeros(count, np.int64)]
        self.mean = np.concatenate([self.mean, np.zeros((*shape, 4))])
        self.var = np.concatenate([self.var, np.zeros((*shape, 4))])
        self.level_run = np.concatenate([self.level_run, np.zeros((*shape, 2))])
        self.recent = np.concatenate([self.recent, np.zeros(shape)])
        self.recent_var = np.concatenate([self.recent_var, np.zeros(shape)])
        self.lagged = np.concatenate([self.lagged, np.zeros((count, len(DRIVER_LAGS)))])
        self.gram = np.concatenate([self.gram, np.zeros((count, width, width))])
        self.moment = np.concatenate([self.moment, np.zeros((*shape, width))])
        self.theta = np.concatenate([self.theta, np.zeros((*shape, width))])
        self.fit_var = np.concatenate([self.fit_var, np.zeros(shape)])
        self.fit_run = np.concatenate([self.fit_run, np.zeros(shape)])
        self.fit_settle = np.r_[self.fit_settle, np.zeros(count, np.int64)]
        for part in self.parts().values():
            part.add_models(count)

    def transform(
        self,
        rows: np.ndarray,
        X: np.ndarray,
        times: np.ndarray | None = None,
        after_gap: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of points grouped by machine (`rows`, in time order), taking them in.

        Returns (unit, z, t2): the values in [0, 1] the trees see (the z clipped to +-z_clip
        and mapped onto [0, 1]) and the z-scores, both shaped (points, features, views in
        `VIEWS` order), and the joint T-squared of each point as a z (0 without the joint
        view). z is 0 while a statistic has no history. `times` (ns) place readings in the
        day for the daily profile (without them it stays off). X must have no NaN (the
        detector fills gaps first). `after_gap` marks points that follow a gap in their
        machine's data: they are compared with no previous reading (as a machine's first one
        is): no step, a new stuck run, the driver's lags restarted; the step statistics do not
        learn them.
        """
        rows = np.asarray(rows, np.intp)
        X = np.asarray(X, np.float64)
        times = np.zeros(len(rows), np.int64) if times is None else np.asarray(times, np.int64)
        gap = np.zeros(len(rows), bool) if after_gap is None else np.asarray(after_gap, bool)
        z = np.zeros((len(rows), self.n_features, len(VIEWS)))
        t2 = np.zeros(len(rows))
        for machines, at in positions(rows):
            z[at], t2[at] = self._step(machines, X[at], times[at], gap[at])
        clip = self.settings.z_clip
        unit = np.clip(0.5 + z / (2.0 * clip), 0.0, 1.0)
        return unit, z, t2

    def _step(
        self, m: np.ndarray, x: np.ndarray, t: np.ndarray, after_gap: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One reading for each machine in `m`: its views' z and T2, and the updated
        statistics."""
        previous = self.previous[m]
        first = np.isnan(previous) | after_gap[:, None]
        step = np.where(first, 0.0, np.abs(x - previous))
        unchanged = (step == 0) & ~first
        still = np.where(unchanged, self.still[m] + 1.0, 0.0)
        p = np.clip(self.p_still[m], *P_BOUNDS)
        # A run of k unchanged readings has chance c**k (c: the chance a run goes on); as a
        # z: the normal tail as unlikely.
        z_still = np.sqrt(2.0 * still * -np.log(run_chance(p)))
        self.p_still[m] = np.where(first, self.p_still[m], p + self._p_alpha * (unchanged - p))
        self.still[m] = still
        floor = np.zeros_like(x) if self.floor is None else self.floor.step(m, x, previous)
        self.previous[m] = x

        mean, var = self.mean[m], self.var[m]
        sd = np.maximum(np.sqrt(var), floor[:, :, None])
        count = self.count[m][:, None, None]
        # The daily profile: what this time of day usually reads (NaN: not known yet).
        if self.season is not None:
            last_seasonal = self.season.residual[m]
            expected, active = self.season.step(m, t, x, previous, sd[:, :, 0])
        else:
            last_seasonal = expected = np.full_like(x, np.nan)
            active = np.zeros(x.shape, bool)
        seasonal = x - expected
        seasonal_step = np.abs(seasonal - last_seasonal)
        values = np.stack([x, step, seasonal, seasonal_step], axis=2)
        have = np.isfinite(values)
        residual = np.where(have, values - mean, 0.0)
        known = sd > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(known, residual / sd, 0.0)
        z = np.where(count >= 2, z, 0.0)
        z[after_gap, :, 1::2] = 0.0  # no step after a gap (raw or from the profile)

        # Exponentially weighted update (adjusted weights for the first readings); an
        # outlier moves the level by at most outlier_z deviations and leaves its variance.
        alpha = np.maximum(self._alpha, 1.0 / (count + 1.0))
        alpha = np.where(after_gap[:, None, None] & (np.arange(4) % 2 == 1), 0.0, alpha)
        limit = self.settings.outlier_z * np.sqrt(var)
        outlier = (var > 0) & (np.abs(residual) > limit) & (count >= MIN_POINTS) & self._robust
        if self.settings.level_rule == "clip":
            moved = np.where(outlier, np.clip(residual, -limit, limit), residual)
        else:
            # An outlier teaches the level nothing until outliers outnumber the other
            # readings over level_span readings: then it is a new regime, learned in full.
            run = self.level_run[m]
            run = np.where(
                have[:, :, ::2] & outlier[:, :, ::2],
                run + 1.0,
                np.where(have[:, :, ::2], np.maximum(run - 1.0, 0.0), run),
            )
            self.level_run[m] = run
            regime = np.repeat(run >= self.settings.level_span, 2, axis=2)
            moved = np.where(outlier & ~regime, 0.0, residual)
            outlier &= ~regime
        self.mean[m] = np.where(have, mean + alpha * moved, mean)
        self.var[m] = np.where(have & ~outlier, (1.0 - alpha) * (var + alpha * residual**2), var)
        # Against the profile where it is active, else against the running level.
        level = np.where(active, z[:, :, 2], z[:, :, 0])
        change = np.where(active, z[:, :, 3], z[:, :, 1])
        z_shift = self._shift(m, np.where(active, seasonal, x), floor, count[:, 0, 0], after_gap)
        if self.driver is None:
            z_fit = np.zeros_like(z_still)
        else:
            z_fit = self._fit(m, x, first[:, self.driver], count[:, 0, 0], floor, after_gap)
        z_t2 = np.zeros(len(m))
        z_joint = np.zeros_like(z_still)
        if self.joint is not None:
            # The readings' departures from their levels, in their own units: the covariance
            # takes care of scale (T2 is scale-free), so no per-sensor spread estimate blurs it.
            departure = np.where(active, residual[:, :, 2], residual[:, :, 0])
            z_t2, z_joint = self.joint.step(m, departure)
        self.count[m] += 1
        return np.stack([level, change, z_still, z_fit, z_shift, z_joint], axis=2), z_t2

    def _shift(
        self,
        m: np.ndarray,
        base: np.ndarray,
        floor: np.ndarray,
        count: np.ndarray,
        after_gap: np.ndarray,
    ) -> np.ndarray:
        """The `shift` view: the reading against a short EW mean (`shift_span` readings), in
        units of how far readings usually stray from it (EW over `SHIFT_VAR_SPANS` times
        longer). Not robust on purpose: a new level is news for about `shift_span` readings,
        then it is the recent mean. After a gap the recent mean starts again from the reading
        (what came before the gap is not recent), keeping its spread."""
        recent, spread = self.recent[m], self.recent_var[m]
        residual = base - recent
        sd = np.maximum(np.sqrt(spread), floor)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where((sd > 0) & (count >= 2)[:, None] & ~after_gap[:, None], residual / sd, 0.0)
        fresh = (count == 0)[:, None]
        restart = after_gap[:, None] & ~fresh
        alpha = np.maximum(self._shift_alpha, 1.0 / (count + 1.0))[:, None]
        alpha_var = np.maximum(self._shift_var_alpha, 1.0 / (count + 1.0))[:, None]
        self.recent[m] = np.where(fresh | restart, base, recent + alpha * residual)
        self.recent_var[m] = np.where(fresh, 0.0, spread + alpha_var * (residual**2 - spread))
        return z

    def _fit(
        self,
        m: np.ndarray,
        x: np.ndarray,
        first: np.ndarray,
        count: np.ndarray,
        floor: np.ndarray,
        after_gap: np.ndarray,
    ) -> np.ndarray:
        """The `fit` view: each sensor's residual from its online regression on the driver
        (see the module doc), as a z against the residual's robust EW variance. After a gap
        the driver's lags restart from its current value and the fit is silent, and learns
        nothing, until the lags have caught up with the sensors (`_settle_after_gap`)."""
        settings = self.settings
        d = x[:, self.driver]
        lagged = self.lagged[m]
        lagged = np.where(
            first[:, None], d[:, None], lagged + self._lag_alpha * (d[:, None] - lagged)
        )
        self.lagged[m] = lagged
        phi = np.column_stack([np.ones_like(d), d, lagged])
        predicted = np.einsum("kfp,kp->kf", self.theta[m], phi)
        residual = x - predicted
        var = self.fit_var[m]
        sd = np.maximum(np.sqrt(var), floor)
        ready = (count >= MIN_POINTS)[:, None] & (var > 0)
        settle = np.where(after_gap, _settle_after_gap(residual, sd, ready, self.driver),
                          self.fit_settle[m])  # fmt: skip
        settling = (settle > 0)[:, None]
        self.fit_settle[m] = np.maximum(settle - 1, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(ready, residual / sd, 0.0)
        z[:, self.driver] = 0.0
        z = np.where(settling, 0.0, z)
        outlier = ready & (np.abs(residual) > settings.outlier_z * sd) & ~settling
        # An outlier leaves the fit alone, so a fault cannot teach it; one that lasts (more
        # outliers than inliers over level_span readings) is a new regime, learned in full.
        run = np.where(outlier, self.fit_run[m] + 1.0, np.maximum(self.fit_run[m] - 1.0, 0.0))
        self.fit_run[m] = run
        target = np.where(outlier & (run < settings.level_span), predicted, x)
        alpha = np.maximum(self._alpha[0], 1.0 / (count + 1.0))[:, None]
        gram = self.gram[m] + alpha[:, :, None] * (phi[:, :, None] * phi[:, None, :] - self.gram[m])
        moment = self.moment[m] + alpha[:, :, None] * (
            target[:, :, None] * phi[:, None, :] - self.moment[m]
        )
        # The residual's variance starts once the fit has had a few cycles of data.
        since = count - MIN_POINTS // 2
        alpha_var = np.maximum(self._alpha[0], 1.0 / (np.maximum(since, 0) + 1.0))[:, None]
        learn_var = (since >= 0)[:, None] & ~outlier & ~settling
        self.fit_var[m] = np.where(
            learn_var, (1.0 - alpha_var) * (var + alpha_var * residual**2), var
        )
        gram = np.where(settling[:, :, None], self.gram[m], gram)
        moment = np.where(settling[:, :, None], self.moment[m], moment)
        self.gram[m] = gram
        self.moment[m] = moment
        ridge = RIDGE * np.einsum("kii->ki", gram) + 1e-12
        system = gram + ridge[:, :, None] * np.eye(gram.shape[1])
        self.theta[m] = solve_positive(system, moment.transpose(0, 2, 1)).transpose(0, 2, 1)
        return z

    def state(self) -> dict[str, np.ndarray]:
        arrays = {name: getattr(self, name) for name in self.STATE}
        for prefix, part in self.parts().items():
            arrays.update({f"{prefix}_{k}": v for k, v in part.state().items()})
        return arrays

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name in self.STATE:
            value = np.asarray(arrays[name])
            if value.shape[1:] != getattr(self, name).shape[1:]:
                raise ValueError(f"view state {name} has shape {value.shape}")
            setattr(self, name, value.astype(getattr(self, name).dtype))
        if len({len(getattr(self, name)) for name in self.STATE}) != 1:
            raise ValueError("view state arrays disagree on the number of machines")
        for prefix, part in self.parts().items():
            mine = {
                k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + "_")
            }
            part.restore(mine)
            if len(getattr(part, part.STATE[0])) != len(self.count):
                raise ValueError(f"{prefix} state disagrees on the number of machines")
