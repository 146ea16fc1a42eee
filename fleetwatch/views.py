"""Feature views: what each sensor looks like to the detector, computed online.

Half-Space Trees judge a point by how crowded its region of the unit box was in the last
window. On a sensor's raw value (the upstream demo) that sees a value outside the usual range
and little else: a jump that stays inside the range, a flat-lined sensor or a slow drift look
normal. Each sensor is therefore seen through three *views*, each a z-score against the
sensor's own running statistics:

* `level`: the value itself, against a robust exponentially weighted mean and variance over
  `level_span` readings (a sustained shift: overload, bearing wear, drift);
* `change`: the size of the step from the previous reading, |x_t - x_(t-1)|, against a plain
  exponentially weighted mean and variance over `change_span` readings (a spike or a jump,
  whatever the level; on NAB's real series this view carries the trees' score);
* `still`: how surprising the current run of unchanged readings is: with p the running share
  of readings equal to the one before (over `level_span` readings), a run of k has chance
  p**k, reported as the normal z with the same tail, sqrt(2 k ln(1/p)) (a stuck sensor).

Scaling is online, never over a batch: the statistics *before* each point give its z. The
level is robust: a point more than `outlier_z` deviations from the mean moves the mean by at
most `outlier_z` deviations times the weight and leaves the variance alone, so a fault cannot
make itself normal quickly. A sustained shift of k deviations is absorbed after about
`(k - outlier_z) / (outlier_z * 2 / (level_span + 1))` readings (a simulated overload, ~20
deviations: ~30 minutes), which is also how a new operating regime is eventually accepted.
The change view is deliberately not robust: after a jump its variance grows, so the jump is
news once, not for the next hundred readings (NAB counts only the first detection).
For the trees, z is clipped to +-`z_clip` and mapped onto [0, 1] (`0.5 + z / (2 z_clip)`).

Everything is carried per machine (`state`/`restore`), so a stream split across runs gives
the same views as one run. Points are processed grouped by machine, in time order; the loop
runs over positions within a batch, vectorized across machines (60 steps for a one-minute
batch of a whole fleet).

>>> views = FeatureViews(ViewSettings(), n_features=1)
>>> views.add_models(1)
>>> x = np.r_[np.tile([10.0, 11.0], 50), 30.0, 30.0, 30.0][:, None]
>>> unit, z = views.transform(np.zeros(len(x), np.intp), x)
>>> unit.shape, [round(float(v), 1) for v in z[100, 0]]  # the jump: far above level and step
((103, 1, 3), [39.0, 210.7, 0.0])
>>> [round(float(v), 1) for v in z[102, 0]]  # held: level still high, step normal again
[38.9, -0.5, 2.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["VIEWS", "FeatureViews", "ViewSettings"]

VIEWS = ("level", "change", "still")
# Readings before the outlier rule applies: the variance must know the usual swings first.
MIN_POINTS = 100
P_BOUNDS = (1e-3, 0.999)  # the estimated chance of an unchanged reading stays inside these


@dataclass(frozen=True)
class ViewSettings:
    """How the views are scaled (see the module doc)."""

    level_span: int = 600
    change_span: int = 100
    outlier_z: float = 3.0
    z_clip: float = 6.0

    def __post_init__(self) -> None:
        for name in ("level_span", "change_span"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not (self.outlier_z > 0 and self.z_clip > 0):
            raise ValueError("outlier_z and z_clip must be > 0")


class FeatureViews:
    """Per machine and sensor: the views of each new reading, scaled online (module doc)."""

    STATE = ("previous", "still", "p_still", "count", "mean", "var")

    def __init__(self, settings: ViewSettings, n_features: int) -> None:
        self.settings = settings
        self.n_features = n_features
        self.previous = np.zeros((0, n_features))  # last reading (NaN: none yet)
        self.still = np.zeros((0, n_features))  # readings since the value last changed
        self.p_still = np.zeros((0, n_features))  # EWMA of "unchanged" (chance of a repeat)
        self.count = np.zeros(0, np.int64)  # readings taken in
        self.mean = np.zeros((0, n_features, 2))  # level, change
        self.var = np.zeros((0, n_features, 2))
        self._alpha = 2.0 / (np.array([settings.level_span, settings.change_span]) + 1.0)
        self._robust = np.array([True, False])  # the outlier rule holds the level only
        self._p_alpha = 2.0 / (settings.level_span + 1.0)

    def add_models(self, count: int) -> None:
        shape = (count, self.n_features)
        self.previous = np.concatenate([self.previous, np.full(shape, np.nan)])
        self.still = np.concatenate([self.still, np.zeros(shape)])
        self.p_still = np.concatenate([self.p_still, np.full(shape, 0.5)])
        self.count = np.r_[self.count, np.zeros(count, np.int64)]
        self.mean = np.concatenate([self.mean, np.zeros((*shape, 2))])
        self.var = np.concatenate([self.var, np.zeros((*shape, 2))])

    def transform(self, rows: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Views of points grouped by machine (`rows`, in time order), taking them in.

        Returns (unit, z), both shaped (points, features, views in `VIEWS` order): the values
        in [0, 1] the trees see (the z clipped to +-z_clip and mapped onto [0, 1]), and the
        z-scores (0 while a statistic has no history). X must have no NaN (the detector
        fills gaps first).
        """
        rows = np.asarray(rows, np.intp)
        X = np.asarray(X, np.float64)
        z = np.zeros((len(rows), self.n_features, len(VIEWS)))
        if len(rows):
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            sizes = np.diff(np.r_[starts, len(rows)])
            machines = rows[starts]
            by_size = np.argsort(-sizes, kind="stable")  # longest groups first
            for k in range(int(sizes.max())):
                live = by_size[: np.searchsorted(-sizes[by_size], -k, side="left")]
                z[starts[live] + k] = self._step(machines[live], X[starts[live] + k])
        clip = self.settings.z_clip
        unit = np.clip(0.5 + z / (2.0 * clip), 0.0, 1.0)
        return unit, z

    def _step(self, m: np.ndarray, x: np.ndarray) -> np.ndarray:
        """One reading for each machine in `m`: its views' z, and the updated statistics."""
        previous = self.previous[m]
        first = np.isnan(previous)
        step = np.where(first, 0.0, np.abs(x - previous))
        unchanged = (step == 0) & ~first
        still = np.where(unchanged, self.still[m] + 1.0, 0.0)
        p = np.clip(self.p_still[m], *P_BOUNDS)
        # A run of k unchanged readings has chance p**k; as a z: the normal tail as unlikely.
        z_still = np.sqrt(2.0 * still * -np.log(p))
        self.p_still[m] = np.where(first, self.p_still[m], p + self._p_alpha * (unchanged - p))
        self.previous[m] = x
        self.still[m] = still

        values = np.stack([x, step], axis=2)
        count = self.count[m][:, None, None]
        mean, var = self.mean[m], self.var[m]
        residual = values - mean
        sd = np.sqrt(var)
        known = sd > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(known, residual / sd, 0.0)
        z = np.where(count >= 2, z, 0.0)

        # Exponentially weighted update (adjusted weights for the first readings); an
        # outlier moves the level by at most outlier_z deviations and leaves its variance.
        alpha = np.maximum(self._alpha, 1.0 / (count + 1.0))
        limit = self.settings.outlier_z * sd
        outlier = known & (np.abs(residual) > limit) & (count >= MIN_POINTS) & self._robust
        moved = np.where(outlier, np.clip(residual, -limit, limit), residual)
        self.mean[m] = mean + alpha * moved
        self.var[m] = np.where(outlier, var, (1.0 - alpha) * (var + alpha * residual**2))
        self.count[m] += 1
        return np.concatenate([z, z_still[:, :, None]], axis=2)

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.STATE}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name in self.STATE:
            value = np.asarray(arrays[name])
            if value.shape[1:] != getattr(self, name).shape[1:]:
                raise ValueError(f"view state {name} has shape {value.shape}")
            setattr(self, name, value.astype(getattr(self, name).dtype))
        if len({len(getattr(self, name)) for name in self.STATE}) != 1:
            raise ValueError("view state arrays disagree on the number of machines")
