"""The usual value at this time of day, per machine and sensor, from the readings' timestamps.

A series with a daily cycle (traffic by hour, a shift pattern, a nightly job) moves by its
full daily range every day; against running statistics every regular edge is a jump and every
daily high a level shift. Compared with the same time of day on earlier days, the regular
parts are expected and only what differs from the usual day is left. This is the seasonal
baseline of classical decomposition (Cleveland et al., "STL: a seasonal-trend decomposition
procedure based on loess", J. Official Statistics 6(1), 1990), kept online:

* the day is cut into `bins` phases (96: 15 minutes) by the reading's UTC time of day;
  `profile[bin]` is an exponentially weighted mean of the readings that fell in that phase
  on earlier days, weighted so that it remembers about `1 / DAY_WEIGHT` days whatever the
  sampling interval (a reading of a 1 Hz series weighs 1/900 of a 15-minute bin's visit);
* a reading far from the profile (past `outlier_z` of the caller's deviation) moves it by at
  most that much, so one odd day does not rewrite the usual one;
* the profile is *ready* once the machine has `MIN_DAYS` days of history and the phase has
  been seen; it is *active* for a sensor only while it explains the series better than the
  previous reading does: the running mean square of the steps of the seasonal residual
  (`x - profile`) must stay below `RATIO` times that of the plain steps. On a series without
  a daily cycle (or sampled so fast that the last reading predicts far better, 1 Hz
  telemetry) the profile stays inactive and changes nothing.

>>> import pandas as pd
>>> times = pd.date_range("2024-01-01", periods=6 * 288, freq="5min").asi8
>>> hour = (times // 3_600_000_000_000) % 24
>>> x = np.where((hour >= 8) & (hour < 18), 80.0, 20.0)  # a square wave: high by day
>>> season = DailyProfile(n_features=1)
>>> season.add_models(1)
>>> m = np.array([0])
>>> previous, out = np.array([[np.nan]]), []
>>> for t, v in zip(times, x):
...     out.append(season.step(m, np.array([t]), np.array([[v]]), previous, np.array([[1.0]])))
...     previous = np.array([[v]])
>>> expected, active = out[-1]
>>> round(float(expected[0, 0]), 3), bool(active[0, 0])
(20.0, True)
>>> [round(float(out[-1 - k][0][0, 0]), 1) for k in (72, 71)]  # 17:55 and 18:00
[80.0, 20.0]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["DAY_NS", "DailyProfile"]

DAY_NS = 86_400_000_000_000
MIN_DAYS = 2.0  # days of history before the profile is used
DAY_WEIGHT = 0.25  # weight of one day's visit to a phase, once the phase has a few days
RATIO = 0.7  # active while the seasonal residual's steps are this much smaller than the plain steps
STEP_SPAN = 600  # readings of memory of the two step sizes compared
MIN_STEPS = 50  # steps of the seasonal residual seen before it can become active


class DailyProfile:
    """Per machine and sensor: a daily profile in `bins` phases (module doc)."""

    STATE = (
        "profile",
        "seen",
        "first",
        "latest",
        "interval",
        "residual",
        "ms_plain",
        "ms_season",
        "steps",
    )

    def __init__(self, n_features: int, bins: int = 96, outlier_z: float = 3.0) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.n_features = n_features
        self.bins = int(bins)
        self.outlier_z = float(outlier_z)
        self.profile = np.zeros((0, n_features, bins))  # usual value per phase
        self.seen = np.zeros((0, bins))  # readings taken in per phase (weights the first days)
        self.first = np.zeros(0, np.int64)  # time of the machine's first reading (ns; -1: none)
        self.latest = np.zeros(0, np.int64)  # time of its last reading
        self.interval = np.zeros(0)  # EW mean of the time between readings (ns)
        self.residual = np.zeros((0, n_features))  # last x - profile (NaN: not ready)
        self.ms_plain = np.zeros((0, n_features))  # EW mean square of the plain steps
        self.ms_season = np.zeros((0, n_features))  # ... and of the seasonal residual's steps
        self.steps = np.zeros(0)  # seasonal residual steps compared so far

    def add_models(self, count: int) -> None:
        shape = (count, self.n_features)
        self.profile = np.concatenate([self.profile, np.zeros((*shape, self.bins))])
        self.seen = np.concatenate([self.seen, np.zeros((count, self.bins))])
        self.first = np.r_[self.first, np.full(count, -1, np.int64)]
        self.latest = np.r_[self.latest, np.full(count, -1, np.int64)]
        self.interval = np.r_[self.interval, np.zeros(count)]
        self.residual = np.concatenate([self.residual, np.full(shape, np.nan)])
        self.ms_plain = np.concatenate([self.ms_plain, np.zeros(shape)])
        self.ms_season = np.concatenate([self.ms_season, np.zeros(shape)])
        self.steps = np.r_[self.steps, np.zeros(count)]

    def phase(self, t: np.ndarray) -> np.ndarray:
        """The phase bin of each time (ns since the epoch, UTC)."""
        return (np.asarray(t, np.int64) % DAY_NS) * self.bins // DAY_NS

    def step(
        self, m: np.ndarray, t: np.ndarray, x: np.ndarray, previous: np.ndarray, sd: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One reading `x` per machine in `m` at times `t` (ns), after `previous` (NaN: none).

        Returns, before the reading is learned: the profile's expected value per sensor (NaN
        where not ready) and whether the profile is active per sensor. `sd` is the caller's
        deviation per sensor, the unit of the outlier rule.
        """
        t = np.asarray(t, np.int64)
        k = self.phase(t)
        new = self.first[m] < 0
        first = np.where(new, t, self.first[m])
        profile = self.profile[m, :, k]  # (machines, features)
        ready = ((t - first) >= MIN_DAYS * DAY_NS) & (self.seen[m, k] > 0)
        expected = np.where(ready[:, None], profile, np.nan)
        active = (
            ready[:, None]
            & (self.steps[m] >= MIN_STEPS)[:, None]
            & (self.ms_season[m] < RATIO * self.ms_plain[m])
        )

        # Is the profile worth it? The steps of x against the steps of x - profile.
        residual = x - expected
        compare = np.isfinite(residual) & np.isfinite(self.residual[m]) & np.isfinite(previous)
        alpha = 2.0 / (STEP_SPAN + 1.0)
        plain = np.where(compare, x - previous, 0.0) ** 2
        season = np.where(compare, residual - self.residual[m], 0.0) ** 2
        self.ms_plain[m] = np.where(
            compare, self.ms_plain[m] + alpha * (plain - self.ms_plain[m]), self.ms_plain[m]
        )
        self.ms_season[m] = np.where(
            compare, self.ms_season[m] + alpha * (season - self.ms_season[m]), self.ms_season[m]
        )
        self.steps[m] += compare.any(axis=1)
        self.residual[m] = residual

        # Learn the phase's mean, weighted to remember ~1/DAY_WEIGHT days at any rate.
        gap = (t - self.latest[m]).astype(np.float64)
        interval = np.where(
            new,
            0.0,
            np.where(self.interval[m] > 0, self.interval[m] + 0.05 * (gap - self.interval[m]), gap),
        )
        per_reading = DAY_WEIGHT * np.clip(interval / (DAY_NS / self.bins), 0.0, 1.0)
        weight = np.maximum(per_reading, 1.0 / (self.seen[m, k] + 1.0))[:, None]
        limit = self.outlier_z * sd
        move = x - profile
        move = np.where(ready[:, None] & (limit > 0), np.clip(move, -limit, limit), move)
        self.profile[m, :, k] = profile + weight * move
        self.seen[m, k] += 1.0
        self.first[m] = first
        self.latest[m] = t
        self.interval[m] = interval
        return expected, active

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.STATE}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name in self.STATE:
            current = getattr(self, name)
            value = np.asarray(arrays[name])
            if value.shape[1:] != current.shape[1:]:
                raise ValueError(f"seasonal state {name} has shape {value.shape}")
            setattr(self, name, value.astype(current.dtype))
        if len({len(getattr(self, name)) for name in self.STATE}) != 1:
            raise ValueError("seasonal state arrays disagree on the number of machines")
