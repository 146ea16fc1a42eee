"""The smallest deviation that can be news, per machine and sensor: the series' resolution.

A z-score divides by a running standard deviation. On a flat or quantised series that
deviation can be ~0 (a temperature reported in steps of 0.1 that sat still for an hour, a
CPU counter in steps of 0.002, a square wave that only ever jumps by its full height), and
then one quantum is "8 deviations". A deviation smaller than what the sensor can resolve is
not news, so every view divides by at least a *floor*:

    floor = max(quanta * quantum, RELATIVE * |last value|)

* `quantum`: the resolution, learned online as the smallest change between consecutive
  readings seen so far (changes below `RELATIVE` of the values themselves are float noise,
  not a resolution, and are ignored);
* `RELATIVE * |value|`: a sensor's relative precision (1e-6: a count of millions does not
  resolve single units once it is scaled and aggregated).

The resolution of a series is a fact of its instrument, not of its regime, so the quantum only
ever shrinks (as in the "minimum detectable change" of measurement practice; Taylor, *An
Introduction to Error Analysis*, 1997, sec. 3.1: a reading is known to half its last digit).

>>> floor = NoiseFloor(n_features=1)
>>> floor.add_models(1)
>>> m, previous = np.array([0]), np.array([[np.nan]])
>>> for x in (0.134, 0.134, 0.136, 0.134):
...     _ = floor.step(m, np.array([[x]]), previous)
...     previous = np.array([[x]])
>>> [round(float(v), 6) for v in floor.floor(m)[0]]  # one quantum of 0.002
[0.002]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["RELATIVE", "NoiseFloor"]

RELATIVE = 1e-6  # relative precision: changes below this share of the value are float noise


class NoiseFloor:
    """Per machine and sensor: the resolution seen so far and the floor it sets (module doc)."""

    STATE = ("quantum", "magnitude")

    def __init__(self, n_features: int, quanta: float = 1.0) -> None:
        if not quanta > 0:
            raise ValueError(f"quanta must be > 0, got {quanta}")
        self.n_features = n_features
        self.quanta = float(quanta)
        self.quantum = np.zeros((0, n_features))  # smallest change seen (inf: none yet)
        self.magnitude = np.zeros((0, n_features))  # |last value|

    def add_models(self, count: int) -> None:
        shape = (count, self.n_features)
        self.quantum = np.concatenate([self.quantum, np.full(shape, np.inf)])
        self.magnitude = np.concatenate([self.magnitude, np.zeros(shape)])

    def floor(self, m: np.ndarray) -> np.ndarray:
        """The smallest standard deviation a view of machines `m` may divide by (0: none yet)."""
        quantum = self.quantum[m]
        resolution = np.where(np.isfinite(quantum), self.quanta * quantum, 0.0)
        return np.maximum(resolution, RELATIVE * self.magnitude[m])

    def step(self, m: np.ndarray, x: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """Take in one reading per machine in `m` (`previous`: the reading before it, NaN
        when there is none); returns the floor *before* it (test-then-train)."""
        before = self.floor(m)
        with np.errstate(invalid="ignore"):
            change = np.abs(x - previous)
            tiny = RELATIVE * (np.abs(x) + np.abs(previous))
            real = np.isfinite(change) & (change > tiny) & (change > 0)
        self.quantum[m] = np.where(real, np.minimum(self.quantum[m], change), self.quantum[m])
        self.magnitude[m] = np.abs(x)
        return before

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.STATE}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name in self.STATE:
            value = np.asarray(arrays[name], np.float64)
            if value.shape[1:] != (self.n_features,):
                raise ValueError(f"noise floor state {name} has shape {value.shape}")
            setattr(self, name, value.copy())
        if len(self.quantum) != len(self.magnitude):
            raise ValueError("noise floor arrays disagree on the number of machines")
