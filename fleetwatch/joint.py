"""The sensors seen together: an online robust covariance, Hotelling's T-squared, and each
sensor as predicted from the others.

A fault that moves flow, pressure and current a little and together passes no sensor's own
alarm, yet the combination is far outside anything the machine did before: the sensors'
deviations normally co-vary in a fixed way, and the fault breaks it. Hotelling's T-squared
(Hotelling, "The generalization of Student's ratio", Ann. Math. Statist. 2, 1931; the
multivariate control chart of MacGregor & Kourti, "Statistical process control of multivariate
processes", Control Eng. Practice 3, 1995) measures exactly that:

    T2 = d' S^-1 d,     d = the sensors' departures from their levels minus their running mean,

with `S` their running covariance. Under normal operation T2 follows a chi-squared law with as
many degrees of freedom as sensors that vary; it is reported as the normal z with the same tail
(Wilson & Hilferty's cube-root approximation, PNAS 17, 1931), so it reads like every other
view. The same precision matrix `P = S^-1` gives, per sensor, its deviation from what the
other sensors predict for it, `(P d)_i / sqrt(P_ii)` (the standardized residual of regressing
sensor i on all the others): the joint view of one sensor, and what names the sensors behind
a T2 alarm.

The covariance is exponentially weighted over `span` readings and robust like the level: a
reading whose T2 is past `outlier_z` teaches it nothing until such readings outnumber the
others over `span` readings (a new regime), so a fault cannot make itself normal. A small
ridge (`RIDGE` of the mean variance) keeps `S` invertible when sensors are constant or
collinear; a constant sensor contributes nothing.

>>> rng = np.random.default_rng(1)
>>> common = rng.normal(size=(2000, 1))
>>> d = np.hstack([common + 0.3 * rng.normal(size=(2000, 1)) for _ in range(3)])
>>> joint = JointView(n_features=3, span=500)
>>> joint.add_models(1)
>>> for row in d:
...     _ = joint.step(np.array([0]), row[None, :])
>>> # each sensor 1.5 deviations out, but against the others: one up, two down
>>> t2, conditional = joint.step(np.array([0]), np.array([[1.5, -1.5, -1.5]]), learn=False)
>>> round(float(t2[0]), 1), [round(float(c), 1) for c in conditional[0]]
(6.9, [7.9, -4.3, -3.7])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fleetwatch.linalg import solve_positive

__all__ = ["JointView", "chi2_as_z"]

RIDGE = 1e-3  # of each variance, added to the covariance's diagonal
MIN_POINTS = 100  # readings before the outlier rule and the statistics apply


def chi2_as_z(t2: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """A chi-squared value with `dof` degrees of freedom as the normal z with the same upper
    tail (Wilson-Hilferty); 0 where dof is 0.

    >>> [round(float(z), 2) for z in chi2_as_z(np.array([3.84, 15.5]), np.array([1, 8]))]
    [1.67, 1.65]
    """
    dof = np.asarray(dof, np.float64)
    safe = np.maximum(dof, 1.0)
    spread = 2.0 / (9.0 * safe)
    root = np.cbrt(np.maximum(t2, 0.0) / safe)
    return np.where(dof > 0, (root - (1.0 - spread)) / np.sqrt(spread), 0.0)


class JointView:
    """Per machine: the running mean and covariance of the sensors' z-scores (module doc)."""

    STATE = ("smoothed", "mean", "cov", "count", "run")

    def __init__(
        self, n_features: int, span: int = 600, outlier_z: float = 3.0, smooth: int = 1
    ) -> None:
        if span < 1 or smooth < 1:
            raise ValueError("span and smooth must be >= 1")
        self.smooth_alpha = 2.0 / (smooth + 1.0)
        self.n_features = n_features
        self.span = int(span)
        self.outlier_z = float(outlier_z)
        self.alpha = 2.0 / (span + 1.0)
        self.smoothed = np.zeros((0, n_features))  # EW mean of the input over `smooth`
        self.mean = np.zeros((0, n_features))
        self.cov = np.zeros((0, n_features, n_features))
        self.count = np.zeros(0)
        self.run = np.zeros(0)  # leaky count of recent outlying readings

    def add_models(self, count: int) -> None:
        f = self.n_features
        self.smoothed = np.concatenate([self.smoothed, np.zeros((count, f))])
        self.mean = np.concatenate([self.mean, np.zeros((count, f))])
        self.cov = np.concatenate([self.cov, np.zeros((count, f, f))])
        self.count = np.r_[self.count, np.zeros(count)]
        self.run = np.r_[self.run, np.zeros(count)]

    def step(
        self, m: np.ndarray, d: np.ndarray, learn: np.ndarray | bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """One vector of sensor z-scores per machine in `m`: (T2 as a z, per machine; each
        sensor's z given the others), both 0 until `MIN_POINTS` readings; then learn it where
        `learn` (and the robust rule allows)."""
        mean, cov, count = self.mean[m], self.cov[m], self.count[m]
        f = self.n_features
        start = (count == 0)[:, None]
        d = np.where(start, d, self.smoothed[m] + self.smooth_alpha * (d - self.smoothed[m]))
        self.smoothed[m] = d
        variances = np.einsum("kii->ki", cov)
        varying = variances > 1e-9
        ridge = RIDGE * variances + 1e-300  # per sensor: units differ
        system = cov + ridge[:, :, None] * np.eye(f)
        centred = np.where(varying, d - mean, 0.0)
        precision = solve_positive(system, np.broadcast_to(np.eye(f), system.shape).copy())
        weighted = np.einsum("kij,kj->ki", precision, centred)
        t2 = np.einsum("ki,ki->k", centred, weighted)
        ready = count >= MIN_POINTS
        z_t2 = np.where(ready, chi2_as_z(t2, varying.sum(axis=1)), 0.0)
        diagonal = np.einsum("kii->ki", precision)
        conditional = np.where(ready[:, None] & varying, weighted / np.sqrt(diagonal), 0.0)

        outlier = ready & (z_t2 > self.outlier_z)
        run = np.where(outlier, self.run[m] + 1.0, np.maximum(self.run[m] - 1.0, 0.0))
        learn = np.broadcast_to(np.asarray(learn, bool), count.shape) & (
            ~outlier | (run >= self.span)
        )
        alpha = np.maximum(self.alpha, 1.0 / (count + 1.0))[:, None]
        residual = d - mean
        new_mean = mean + alpha * residual
        outer = residual[:, :, None] * residual[:, None, :]
        new_cov = (1.0 - alpha[:, :, None]) * (cov + alpha[:, :, None] * outer)
        self.mean[m] = np.where(learn[:, None], new_mean, mean)
        self.cov[m] = np.where(learn[:, None, None], new_cov, cov)
        self.count[m] = count + learn
        self.run[m] = run
        return z_t2, conditional

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.STATE}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name in self.STATE:
            current = getattr(self, name)
            value = np.asarray(arrays[name], np.float64)
            if value.shape[1:] != current.shape[1:]:
                raise ValueError(f"joint state {name} has shape {value.shape}")
            setattr(self, name, value.copy())
        if len({len(getattr(self, name)) for name in self.STATE}) != 1:
            raise ValueError("joint state arrays disagree on the number of machines")
