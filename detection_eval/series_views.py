"""Feature views of one series and their scaling into Half-Space Trees' unit cube, for NAB runs.

HST splits each feature's [0, 1] range at random, so what a detector can see depends on which
views of the signal it gets (the value, how fast it changes, how far it is from its recent
level) and how they are squeezed into [0, 1]. Every view and scaling here is causal (row t uses
rows <= t) except `global_minmax`, which reproduces the upstream blog's whole-batch scaling.

>>> v = np.array([1.0, 2.0, 4.0, 4.0])
>>> view(v, "diff").tolist()
[0.0, 1.0, 2.0, 0.0]
>>> scale(v[:, None], "global_minmax")[:, 0].tolist()
[0.0, 0.3333333333333333, 1.0, 1.0]
>>> scale(v[:, None], "running_minmax")[:, 0].tolist()
[0.5, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VIEWS = ("value", "diff", "abs_diff", "baseline_dev", "abs_baseline_dev")
SCALINGS = ("global_minmax", "running_minmax", "ewm_zscore")


def view(values: np.ndarray, name: str, baseline_span: int = 100) -> np.ndarray:
    """One view of the series: the value, its first difference, or its gap to an EWMA baseline."""
    values = np.asarray(values, dtype=float)
    if name == "value":
        return values.copy()
    if name in ("diff", "abs_diff"):
        diff = np.diff(values, prepend=values[:1])
        return np.abs(diff) if name == "abs_diff" else diff
    if name in ("baseline_dev", "abs_baseline_dev"):
        # The baseline before this row, so a jump is measured against what came before it.
        baseline = pd.Series(values).ewm(span=baseline_span, adjust=False).mean().to_numpy()
        previous = np.r_[values[:1], baseline[:-1]]
        gap = values - previous
        return np.abs(gap) if name == "abs_baseline_dev" else gap
    raise ValueError(f"unknown view {name!r}; choose from {', '.join(VIEWS)}")


def scale(
    columns: np.ndarray, method: str, zscore_span: int = 1000, z_clip: float = 6.0
) -> np.ndarray:
    """Map each column into [0, 1], the region HST's random splits cover."""
    columns = np.asarray(columns, dtype=float)
    if method == "global_minmax":
        low, high = columns.min(axis=0), columns.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        return (columns - low) / span
    if method == "running_minmax":
        low = np.minimum.accumulate(columns, axis=0)
        high = np.maximum.accumulate(columns, axis=0)
        span = high - low
        return np.where(span > 0, (columns - low) / np.where(span > 0, span, 1.0), 0.5)
    if method == "ewm_zscore":
        frame = pd.DataFrame(columns)
        ewm = frame.ewm(span=zscore_span, adjust=False)
        mean = ewm.mean().shift(1).to_numpy()
        std = ewm.std(bias=True).shift(1).to_numpy()
        mean[0] = columns[0]
        std = np.nan_to_num(std, nan=0.0)
        z = np.where(std > 0, (columns - mean) / np.where(std > 0, std, 1.0), 0.0)
        return np.clip(0.5 + z / (2 * z_clip), 0.0, 1.0)
    raise ValueError(f"unknown scaling {method!r}; choose from {', '.join(SCALINGS)}")
