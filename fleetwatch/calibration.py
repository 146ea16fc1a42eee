"""Raw anomaly evidence as a *surprise*, -ln(tail probability), against each machine's history.

A z-score of 8 is rare on a quiet sensor and routine on a spiky counter; a tree score of 0.9 is
rare for one machine and common for another. A fixed threshold on raw evidence therefore means
something different on every series, and raw scores pile up where they saturate (ties that the
trees' random structure then orders). Calibration turns each raw statistic `r` into the
probability of seeing at least `r` on this machine, learned from its own past, and reports the
surprise `S = -ln P(R >= r)` (nats: 2.3 per factor of ten):

* peaks over threshold (Pickands, "Statistical inference using extreme order statistics",
  Ann. Statist. 3, 1975; online as in Siffer et al., "Anomaly detection in streams with
  extreme value theory", KDD 2017): above a running upper quantile `u` (exceeded by a share
  `q` of the readings) the tail is exponential, `P(R >= r) = q * exp(-(r - u) / beta)`, with
  `beta` the running mean excess;
* raw statistics enter in nats already (`z**2 / 2` for a z-score, whose Gaussian tail is
  `exp(-z**2 / 2)`; `-ln(1 - score)` for the trees), so a Gaussian sensor keeps its textbook
  surprise (z = 5: ~14 nats) and a heavy-tailed one is discounted by its own larger `beta`;
* `u` follows the quantile by stochastic approximation (Robbins-Monro, in steps of `beta`;
  on a statistic that sits on one value it settles there, so the value itself is no news),
  `beta` is exponentially weighted over `span` readings; one excess moves `beta` by
  at most `CLIP` times itself, so one fault does not teach the machine that faults are normal,
  and never falls below `MIN_SCALE` of its prior (a statistic that sat still must not make
  the tiniest excess infinitely surprising).
  Priors (`u0`, `beta0`, worth `PRIOR` readings) start every machine at the Gaussian tail.

Surprises are continuous in `r`: distinct evidence gives distinct scores, and a threshold on
`S` is a tail probability, the same on every series.

>>> # Gaussian z-scores: z = 2 is ~5 % (3.0 nats), z = 5 about 14 nats (the exponential tail
>>> # fitted at the 95 % quantile is a little stricter than the Gaussian's own)
>>> calibration = TailCalibration(u0=[1.92], beta0=[1.0])
>>> calibration.add_models(1)
>>> rng = np.random.default_rng(0)
>>> m = np.array([0])
>>> for z in rng.normal(size=3000):
...     _ = calibration.step(m, np.array([[z * z / 2]]))
>>> [round(float(calibration.step(m, np.array([[z * z / 2]]), learn=False)[0, 0]), 1)
...  for z in (2.0, 5.0)]
[3.2, 17.8]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["TailCalibration"]

PRIOR = 20.0  # readings the prior is worth
CLIP = 4.0  # one excess moves the mean excess by at most this many times itself
#: The mean excess never falls below this share of its prior: a statistic that sat still (a
#: flat series, identical tree scores) must not make the tiniest excess infinitely surprising.
MIN_SCALE = 0.25


class TailCalibration:
    """Per machine and channel: the exponential tail of a raw statistic (module doc)."""

    STATE = ("threshold", "scale", "count", "exceedances")

    def __init__(
        self,
        u0: Sequence[float],
        beta0: Sequence[float],
        q: float = 0.05,
        span: int = 2000,
    ) -> None:
        self.u0 = np.asarray(u0, np.float64)
        self.beta0 = np.asarray(beta0, np.float64)
        if self.u0.shape != self.beta0.shape or self.u0.ndim != 1:
            raise ValueError("u0 and beta0 need one value per channel")
        if not (0 < q < 1 and span >= 1 and (self.beta0 > 0).all()):
            raise ValueError("need 0 < q < 1, span >= 1 and beta0 > 0")
        self.q = float(q)
        self.alpha = 2.0 / (span + 1.0)
        width = len(self.u0)
        self.threshold = np.zeros((0, width))  # u: the running (1 - q) quantile
        self.scale = np.zeros((0, width))  # beta: the mean excess over u
        self.count = np.zeros((0, width))
        self.exceedances = np.zeros((0, width))

    def add_models(self, count: int) -> None:
        shape = (count, len(self.u0))
        self.threshold = np.concatenate([self.threshold, np.broadcast_to(self.u0, shape)])
        self.scale = np.concatenate([self.scale, np.broadcast_to(self.beta0, shape)])
        self.count = np.concatenate([self.count, np.zeros(shape)])
        self.exceedances = np.concatenate([self.exceedances, np.zeros(shape)])

    def surprise(self, m: np.ndarray, r: np.ndarray) -> np.ndarray:
        """-ln P(R >= r) per machine in `m` and channel (0 at or below the usual values)."""
        excess = (r - self.threshold[m]) / self.scale[m]
        return np.maximum(0.0, excess - np.log(self.q))

    def step(self, m: np.ndarray, r: np.ndarray, learn: np.ndarray | bool = True) -> np.ndarray:
        """The surprise of `r` (machines `m` x channels), then learn it where `learn`."""
        surprise = self.surprise(m, r)
        learn = np.broadcast_to(np.asarray(learn, bool), r.shape) & np.isfinite(r)
        if not learn.any():
            return surprise
        u, beta = self.threshold[m], self.scale[m]
        count = self.count[m] + learn
        above = r > u
        alpha = np.maximum(self.alpha, 1.0 / (count + PRIOR))
        hits = self.exceedances[m] + (learn & above)
        beta_alpha = np.maximum(self.alpha / self.q, 1.0 / (hits + PRIOR * self.q))
        excess = np.minimum(r - u, CLIP * beta)
        beta_new = np.where(above, beta + np.minimum(beta_alpha, 1.0) * (excess - beta), beta)
        u_new = u + alpha * beta * (above - self.q) / self.q
        self.threshold[m] = np.where(learn, u_new, u)
        self.scale[m] = np.where(learn, np.maximum(beta_new, MIN_SCALE * self.beta0), beta)
        self.count[m] = count
        self.exceedances[m] = hits
        return surprise

    def learn_window(
        self, m: np.ndarray, count: np.ndarray, above: np.ndarray, excess: np.ndarray
    ) -> None:
        """Learn a batch at once, as `step` would one reading at a time with the state held
        fixed during the batch: `count` readings per machine and channel, `above` of them
        past the threshold, `excess` the sum of their (clipped) excesses over it. For raw
        statistics whose own model changes only between batches (the trees' windows)."""
        u, beta = self.threshold[m], self.scale[m]
        alpha = np.maximum(self.alpha, 1.0 / (self.count[m] + PRIOR))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_excess = np.where(above > 0, excess / above, beta)
        beta_alpha = np.minimum(
            np.maximum(self.alpha / self.q, 1.0 / (self.exceedances[m] + PRIOR * self.q)), 1.0
        )
        beta_new = beta + (1.0 - (1.0 - beta_alpha) ** above) * (mean_excess - beta)
        self.scale[m] = np.maximum(beta_new, MIN_SCALE * self.beta0)
        # The readings' steps added up, but at most one mean excess per batch: the quantile
        # must not overshoot a batch of identical values.
        move = alpha * beta * (above - self.q * count) / self.q
        self.threshold[m] = u + np.clip(move, -beta, beta)
        self.count[m] += count
        self.exceedances[m] += above

    def clipped_excess(self, m: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether `r` is past each machine's threshold, and by how much (clipped as `step`
        clips it): the per-reading terms of `learn_window`."""
        above = r > self.threshold[m]
        excess = np.where(above, np.minimum(r - self.threshold[m], CLIP * self.scale[m]), 0.0)
        return above, excess

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.STATE}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name in self.STATE:
            value = np.asarray(arrays[name], np.float64)
            if value.shape[1:] != (len(self.u0),):
                raise ValueError(f"calibration state {name} has shape {value.shape}")
            setattr(self, name, value.copy())
        if len({len(getattr(self, name)) for name in self.STATE}) != 1:
            raise ValueError("calibration arrays disagree on the number of machines")
