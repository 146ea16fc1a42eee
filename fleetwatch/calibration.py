"""Raw anomaly evidence as a *surprise*, -ln(tail probability), against each machine's history.

A z-score of 8 is rare on a quiet sensor and routine on a spiky counter; a tree score of 0.9 is
rare for one machine and common for another. A fixed threshold on raw evidence therefore means
something different on every series, and raw scores pile up where they saturate (ties that the
trees' random structure then orders). Calibration turns each raw statistic `r` into the
probability of seeing at least `r` on this machine, learned from its own past, and reports the
surprise `S = -ln P(R >= r)` (nats: 2.3 per factor of ten):

* peaks over threshold (Pickands, "Statistical inference using extreme order statistics",
  Ann. Statist. 3, 1975; online as in Siffer et al., "Anomaly detection in streams with
  extreme value theory", KDD 2017), at two levels: a running upper quantile `u` (exceeded by
  a share `q` = 5 % of the readings) and a far one `u2` (exceeded by `q * FAR_SHARE` = 0.15 %).
  Between them the tail is the exponential through both (`P(u) = q`, `P(u2) = q2`); beyond
  `u2` it is exponential with the running mean excess over `u2`, `P(R >= r) = q2 * exp(-(r -
  u2) / beta2)`. Two levels because one exponential fitted to the bulk of the exceedances
  says nothing about the rare large ones: on a series where a jump of 50 deviations happens
  twice a day (a daily edge, a nightly batch job), the far quantile sits at the jump, and the
  next such jump is about as surprising as its frequency, 5-6 nats, not 1000;
* raw statistics enter in nats already (`z**2 / 2` for a z-score, whose Gaussian tail is
  `exp(-z**2 / 2)`; `-ln(1 - score)` for the trees), so a Gaussian sensor keeps its textbook
  surprise (z = 5: ~14 nats) and a heavy-tailed one is discounted by its own larger `beta`;
* `u` and `u2` follow their quantiles by stochastic approximation (Robbins-Monro, in steps
  of their mean excess; on a statistic that sits on one value they settle there, so the value
  itself is no news), the mean excesses are exponentially weighted over `span` readings; one
  excess moves a mean excess by
  at most `CLIP` times itself, so one fault does not teach the machine that faults are normal,
  and never falls below `MIN_SCALE` of its prior (a statistic that sat still must not make
  the tiniest excess infinitely surprising).
  Priors (`u0`, `beta0`, worth `PRIOR` readings) start every machine at the Gaussian tail.

Surprises are continuous in `r`: distinct evidence gives distinct scores, and a threshold on
`S` is a tail probability, the same on every series.

>>> # Gaussian z-scores: z = 2 is ~5 % (3.0 nats), z = 5 about 14.4 nats (the far tail,
>>> # fitted on few readings, is a little lenient)
>>> calibration = TailCalibration(u0=[1.92], beta0=[1.0])
>>> calibration.add_models(1)
>>> rng = np.random.default_rng(0)
>>> m = np.array([0])
>>> for z in rng.normal(size=3000):
...     _ = calibration.step(m, np.array([[z * z / 2]]))
>>> [round(float(calibration.step(m, np.array([[z * z / 2]]), learn=False)[0, 0]), 1)
...  for z in (2.0, 5.0)]
[3.2, 12.3]
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
#: The far quantile is exceeded by this share of what exceeds the near one (0.15 % of readings).
FAR_SHARE = 0.03
#: The far quantile stays at least this many prior mean excesses above the near one.
MIN_GAP = 0.25


class TailCalibration:
    """Per machine and channel: the tail of a raw statistic above two running quantiles
    (module doc)."""

    STATE = ("threshold", "scale", "far", "far_scale", "count", "exceedances")

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
        self.q_far = self.q * FAR_SHARE
        self.alpha = 2.0 / (span + 1.0)
        width = len(self.u0)
        self.threshold = np.zeros((0, width))  # u: the running (1 - q) quantile
        self.scale = np.zeros((0, width))  # beta: the mean excess over u
        self.far = np.zeros((0, width))  # u2: the running (1 - q * FAR_SHARE) quantile
        self.far_scale = np.zeros((0, width))  # beta2: the mean excess over u2
        self.count = np.zeros((0, width))
        self.exceedances = np.zeros((0, width))

    def add_models(self, count: int) -> None:
        shape = (count, len(self.u0))
        far0 = self.u0 + self.beta0 * np.log(1.0 / FAR_SHARE)  # the exponential tail's u2
        self.threshold = np.concatenate([self.threshold, np.broadcast_to(self.u0, shape)])
        self.scale = np.concatenate([self.scale, np.broadcast_to(self.beta0, shape)])
        self.far = np.concatenate([self.far, np.broadcast_to(far0, shape)])
        self.far_scale = np.concatenate([self.far_scale, np.broadcast_to(self.beta0, shape)])
        self.count = np.concatenate([self.count, np.zeros(shape)])
        self.exceedances = np.concatenate([self.exceedances, np.zeros(shape)])

    def surprise(self, m: np.ndarray, r: np.ndarray) -> np.ndarray:
        """-ln P(R >= r) per machine in `m` and channel (0 at or below the usual values):
        exponential between the two quantiles (through both), exponential with the far
        mean excess beyond the far one."""
        u, far = self.threshold[m], self.far[m]
        near_rate = np.log(1.0 / FAR_SHARE) / np.maximum(far - u, MIN_GAP * self.beta0)
        near = (r - u) * near_rate - np.log(self.q)
        beyond = (r - far) / self.far_scale[m] - np.log(self.q_far)
        return np.maximum(0.0, np.where(r > far, beyond, near))

    def step(self, m: np.ndarray, r: np.ndarray, learn: np.ndarray | bool = True) -> np.ndarray:
        """The surprise of `r` (machines `m` x channels), then learn it where `learn`."""
        surprise = self.surprise(m, r)
        learn = np.broadcast_to(np.asarray(learn, bool), r.shape) & np.isfinite(r)
        if not learn.any():
            return surprise
        count = self.count[m] + learn
        alpha = np.maximum(self.alpha, 1.0 / (count + PRIOR))
        for level, scale, q in (("threshold", "scale", self.q), ("far", "far_scale", self.q_far)):
            u, beta = getattr(self, level)[m], getattr(self, scale)[m]
            above = r > u
            # the mean excess learns from exceedances only: its weight is alpha / q
            beta_alpha = np.minimum(np.maximum(alpha / q, 1.0 / (count * q + PRIOR * q)), 1.0)
            excess = np.minimum(r - u, CLIP * beta)
            beta_new = np.where(above, beta + beta_alpha * (excess - beta), beta)
            u_new = u + alpha * beta * (above - q) / q
            getattr(self, level)[m] = np.where(learn, u_new, u)
            getattr(self, scale)[m] = np.where(
                learn, np.maximum(beta_new, MIN_SCALE * self.beta0), beta
            )
        self.far[m] = np.maximum(self.far[m], self.threshold[m] + MIN_GAP * self.beta0)
        self.count[m] = count
        self.exceedances[m] += learn & (r > self.threshold[m])
        return surprise

    def learn_window(self, m: np.ndarray, sums: np.ndarray) -> None:
        """Learn a batch at once, as `step` would one reading at a time with the state held
        fixed during the batch. `sums` (machines x 5 x channels) are what `window_terms`
        gives summed over the batch: readings, and per quantile the readings past it and
        their (clipped) excesses. For raw statistics whose own model changes only between
        batches (the trees' windows)."""
        count = sums[:, 0]
        alpha = np.maximum(self.alpha, 1.0 / (self.count[m] + PRIOR))
        pairs = (("threshold", "scale", self.q), ("far", "far_scale", self.q_far))
        for k, (level, scale, q) in enumerate(pairs):
            above, excess = sums[:, 1 + 2 * k], sums[:, 2 + 2 * k]
            u, beta = getattr(self, level)[m], getattr(self, scale)[m]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_excess = np.where(above > 0, excess / above, beta)
            beta_alpha = np.minimum(
                np.maximum(alpha / q, 1.0 / (self.count[m] * q + PRIOR * q)), 1.0
            )
            beta_new = beta + (1.0 - (1.0 - beta_alpha) ** above) * (mean_excess - beta)
            getattr(self, scale)[m] = np.maximum(beta_new, MIN_SCALE * self.beta0)
            # The readings' steps added up, but at most one mean excess per batch: the
            # quantile must not overshoot a batch of identical values.
            move = alpha * beta * (above - q * count) / q
            getattr(self, level)[m] = u + np.clip(move, -beta, beta)
        self.far[m] = np.maximum(self.far[m], self.threshold[m] + MIN_GAP * self.beta0)
        self.count[m] += count
        self.exceedances[m] += sums[:, 1]

    def window_terms(self, m: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Per reading (machines `m` x channels): 1, and per quantile whether `r` is past it
        and by how much (clipped as `step` clips it), stacked as (readings, 5, channels): the
        terms `learn_window` sums."""
        terms = [np.ones_like(r)]
        for level, scale in (("threshold", "scale"), ("far", "far_scale")):
            u, beta = getattr(self, level)[m], getattr(self, scale)[m]
            above = r > u
            terms += [
                above.astype(np.float64),
                np.where(above, np.minimum(r - u, CLIP * beta), 0.0),
            ]
        return np.stack(terms, axis=1)

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
