"""A rolling z-score: the cheap statistical reference detector for NAB runs.

- `rolling_abs_z`: how many standard deviations each row is from the previous `window` rows
  (NAB's windowedGaussian idea), causal.
- `squash`: maps |z| in [0, inf) to [0, 1) without saturating, so large deviations stay ordered
  (NAB sweeps thresholds, so only the order of scores matters, and ties at 1.0 would merge).

>>> z = rolling_abs_z(np.r_[np.zeros(50) + np.arange(50) % 2, 10.0][:, None], 20)
>>> round(float(z[-1, 0]), 1)
19.0
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def rolling_abs_z(columns: np.ndarray, window: int, min_periods: int = 10) -> np.ndarray:
    """|x - mean| / std of the previous `window` rows, per column (0 until there is history)."""
    frame = pd.DataFrame(np.asarray(columns, dtype=float))
    past = frame.shift(1).rolling(window, min_periods=min_periods)
    mean, std = past.mean().to_numpy(), past.std(ddof=0).to_numpy()
    z = np.abs(frame.to_numpy() - mean) / np.where(std > 0, std, np.nan)
    # A flat history: no deviation is no news; any deviation is as surprising as it gets.
    flat = np.isfinite(mean) & ~(std > 0)
    z = np.where(flat, np.where(frame.to_numpy() == mean, 0.0, 50.0), z)
    return np.nan_to_num(z, nan=0.0)


def squash(z: np.ndarray, half: float = 3.5) -> np.ndarray:
    """|z| -> [0, 1): `half` standard deviations map to 0.5."""
    return z / (z + half)
