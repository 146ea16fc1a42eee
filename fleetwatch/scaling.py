"""Scaling sensor values into Half-Space Trees' unit box, per machine, without looking ahead.

HST splits each feature's range (0, 1) at random points, so raw values must be mapped onto it,
with a scale that depends only on what came before each point (never on later points of the
same batch), stays put between runs, and survives a flat signal.

* `LimitScaler`: configured physical limits, `(x - low) / (high - low)`. The same for every
  machine and every run; the recommended choice when sensor ranges are known. Values outside
  the limits are kept (HST sends them to the outermost leaves).
* `OnlineMinMaxScaler`: per machine, the min and max of the values seen *before* each point
  (test-then-train for the scaler too). Its state persists, so a stream split across runs
  scales exactly as one run. With no spread yet (first points, flat signal) a value equal to
  the seen level maps to 0.5 and a value above or below it to 1.0 or 0.0, so a jump out of a
  flat signal still stands out and nothing divides by zero.

>>> import numpy as np
>>> scaled, spans = LimitScaler({"power": (0.0, 600.0)}).scale(np.array([0, 0]),
...                                                           np.array([[150.0], [600.0]]))
>>> scaled.ravel().tolist(), spans.ravel().tolist()
([0.25, 1.0], [600.0, 600.0])
>>> online = OnlineMinMaxScaler(1)
>>> online.add_models(1)
>>> scaled, spans = online.scale(np.zeros(5, dtype=np.intp), np.array([[5, 5, 7, 6, 9.0]]).T)
>>> scaled.ravel().tolist(), spans.ravel().tolist()
([0.5, 0.5, 1.0, 0.5, 2.0], [1.0, 1.0, 1.0, 2.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

__all__ = ["LimitScaler", "OnlineMinMaxScaler", "Scaler", "segmented_running_max"]


class Scaler(Protocol):
    """Maps each machine's raw values onto the unit box; `scale` also returns, per value,
    the raw width of the unit interval it used (to express deviations in scale units)."""

    def add_models(self, count: int) -> None: ...
    def scale(self, rows: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def state(self) -> dict[str, np.ndarray]: ...
    def restore(self, arrays: Mapping[str, np.ndarray]) -> None: ...


class LimitScaler:
    """`(x - low) / (high - low)` per feature from fixed limits; no state."""

    def __init__(
        self, limits: Mapping[str, tuple[float, float]], features: Sequence[str] | None = None
    ):
        features = tuple(features) if features is not None else tuple(limits)
        missing = [f for f in features if f not in limits]
        if missing:
            raise ValueError(f"no limits for features {missing}; give (low, high) for each")
        bounds = np.array([[float(v) for v in limits[f]] for f in features], dtype=np.float64)
        if bounds.shape != (len(features), 2):
            raise ValueError(f"limits must be (low, high) pairs, got {dict(limits)}")
        low, high = bounds[:, 0], bounds[:, 1]
        if not (np.isfinite(bounds).all() and (high > low).all()):
            raise ValueError(f"limits must be finite with low < high, got {dict(limits)}")
        self.features, self.low, self.span = features, low, high - low

    def add_models(self, count: int) -> None:
        """Nothing per machine: the limits are the same for all."""

    def scale(self, rows: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        return (X - self.low) / self.span, np.broadcast_to(self.span, X.shape)

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Nothing to restore."""


class OnlineMinMaxScaler:
    """Per machine and feature, scale by the min and max of earlier values (see module doc)."""

    def __init__(self, n_features: int) -> None:
        self.minimum = np.empty((0, n_features))
        self.maximum = np.empty((0, n_features))

    def add_models(self, count: int) -> None:
        fresh = np.full((count, self.minimum.shape[1]), np.nan)
        self.minimum = np.concatenate([self.minimum, fresh])
        self.maximum = np.concatenate([self.maximum, fresh])

    def scale(self, rows: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scale the points (in stream order per machine) and take them into the min/max.

        NaN values are ignored by the running min/max and stay NaN. The spans returned are
        max - min before each point, 1.0 where there is no spread yet.
        """
        X = np.asarray(X, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.intp)
        out, spans = np.empty_like(X), np.empty_like(X)
        if len(rows) == 0:
            return out, spans
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
        groups = sorted_rows[starts]
        for f in range(X.shape[1]):
            values = X[order, f]
            high, new_high = segmented_running_max(values, starts, self.maximum[groups, f])
            low, new_low = segmented_running_max(-values, starts, -self.minimum[groups, f])
            low = -low
            span = high - low
            with np.errstate(invalid="ignore", divide="ignore"):
                scaled = np.where(
                    span > 0, (values - low) / span, 0.5 + 0.5 * np.sign(values - low)
                )
            scaled[np.isnan(low)] = 0.5  # nothing seen before: no scale yet
            scaled[np.isnan(values)] = np.nan
            out[order, f] = scaled
            spans[order, f] = np.where(span > 0, span, 1.0)
            self.maximum[groups, f] = new_high
            self.minimum[groups, f] = -new_low
        return out, spans

    def state(self) -> dict[str, np.ndarray]:
        return {"minimum": self.minimum, "maximum": self.maximum}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        minimum, maximum = arrays["minimum"], arrays["maximum"]
        if minimum.shape != maximum.shape or minimum.shape[1:] != self.minimum.shape[1:]:
            raise ValueError(f"scaler arrays have shapes {minimum.shape}, {maximum.shape}")
        self.minimum, self.maximum = minimum.astype(np.float64), maximum.astype(np.float64)


def segmented_running_max(
    values: np.ndarray, starts: np.ndarray, carry: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Running max of the values *before* each position, restarting at each group start.

    `values` are grouped (group g begins at `starts[g]`); `carry[g]` is the max before the
    group (NaN: none). NaN values are skipped. Returns (max before each value, max after each
    group). Exact: values are ranked once and the running max is taken over integer keys
    `group * size + rank`, so groups cannot leak into each other.

    >>> segmented_running_max(np.array([1.0, 3.0, 2.0, 0.0, np.nan]), np.array([0, 3]),
    ...                       np.array([2.0, np.nan]))
    (array([ 2.,  2.,  3., nan,  0.]), array([3., 0.]))
    """
    ext = np.insert(values, starts, carry)  # each group's carry goes in front of it
    size = len(ext)
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]) + 1)
    order = np.argsort(ext, kind="stable")  # NaN sorts last
    rank = np.empty(size, dtype=np.int64)
    rank[order] = np.arange(size)
    key = np.where(np.isnan(ext), -1, group * size + rank)
    running = np.maximum.accumulate(key)
    offset = group * size
    known = running >= offset  # a value of this group (or its carry) has been seen
    value = np.where(known, ext[order][np.clip(running - offset, 0, size - 1)], np.nan)
    is_point = np.ones(size, dtype=bool)
    is_point[starts + np.arange(len(starts))] = False
    before = np.roll(value, 1)[is_point]  # the element in front: a point or the carry
    ends = np.r_[starts[1:] + np.arange(1, len(starts)), size] - 1
    return before, value[ends]
