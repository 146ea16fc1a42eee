"""Which sensors moved, and how unusual each is, in words.

An alert that lists every sensor, or ranks a sensor 0.3 deviations out as "third most moved",
sends the user looking in the wrong place. One rule decides which sensors contributed to an
anomalous reading, used by the alert's "features that moved" and by the plot's markers alike:

* a sensor contributed when its deviation (the signed z-score of its most unusual view, the
  detector's `dev_<feature>`) is at least `MIN_Z` deviations, and
* at least `SHARE` of the largest deviation of that reading (a sensor 4 deviations out next
  to one 40 out did not cause the alarm; next to one 5 out it did).

If no sensor passes (an alarm carried by a combination, or by the trees), the single most
deviating one is named. `describe` states how unusual a contribution is in words, after the
view that found it: "temperature 7.2 deviations above its usual level for this load".

>>> contributors(np.array([[9.0, -6.0, 1.0], [0.5, 0.2, np.nan]])).tolist()
[[True, True, False], [True, False, False]]
>>> describe("temperature", 7.24, "fit", driver="load")
'temperature 7.2 deviations above its usual level for this load'
>>> describe("power", -5.0, "level")
'power 5.0 deviations below its usual level'
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MIN_Z", "SHARE", "contributors", "describe", "ranked_contributors"]

MIN_Z = 3.0  # fewer deviations than this is ordinary noise, never a cause
SHARE = 0.5  # of the largest deviation of the same reading

_PHRASES = {
    "level": ("{d} deviations {side} its usual level", "above", "below"),
    "fit": ("{d} deviations {side} its usual level for this {driver}", "above", "below"),
    "change": ("a step {d} deviations larger than its usual steps", "", ""),
    "still": ("unchanged for longer than usual ({d} deviations)", "", ""),
    "shift": ("{d} deviations {side} its recent level", "above", "below"),
    "joint": ("{d} deviations {side} what the other sensors indicate", "above", "below"),
    "raw": ("{d} of its range {side} its usual range", "above", "below"),
}


def contributors(deviations: np.ndarray, min_z: float = MIN_Z, share: float = SHARE) -> np.ndarray:
    """Per reading (rows) and sensor (columns): did the sensor contribute? (module doc)

    NaN deviations never contribute; a reading with no finite deviation has no contributor.
    """
    dev = np.abs(np.asarray(deviations, np.float64))
    dev = np.where(np.isfinite(dev), dev, -np.inf)
    if dev.ndim != 2:
        raise ValueError("deviations must be (readings, sensors)")
    worst = dev.max(axis=1, keepdims=True) if dev.shape[1] else np.zeros((len(dev), 1))
    strong = (dev >= min_z) & (dev >= share * worst)
    fallback = ~strong.any(axis=1, keepdims=True) & (dev == worst) & np.isfinite(worst)
    first = np.cumsum(fallback, axis=1) == 1  # the first of equal largest deviations only
    return strong | (fallback & first)


def ranked_contributors(deviations: dict[str, float], limit: int | None = None) -> list[str]:
    """The contributing features of one reading, largest deviation first.

    >>> ranked_contributors({"load": 2.0, "power": -12.0, "temperature": 7.0})
    ['power', 'temperature']
    """
    names = list(deviations)
    values = np.array([[deviations[n] for n in names]], np.float64)
    mask = contributors(values)[0] if names else np.zeros(0, bool)
    chosen = sorted(
        (n for n, keep in zip(names, mask, strict=True) if keep),
        key=lambda n: -abs(deviations[n]),
    )
    return chosen[:limit] if limit is not None else chosen


def describe(feature: str, deviation: float, view: str, driver: str | None = None) -> str:
    """How unusual one sensor is, in words, after the view that found the deviation."""
    if deviation is None or not math.isfinite(deviation):
        return f"{feature} moved"
    template, up, down = _PHRASES.get(view, _PHRASES["level"])
    side = up if deviation >= 0 else down
    size = f"{abs(deviation):.0%}" if view == "raw" else f"{abs(deviation):.1f}"
    text = template.format(d=size, side=side, driver=driver or "load")
    return f"{feature} {text}"
