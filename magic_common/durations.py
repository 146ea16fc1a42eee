"""Durations as people type them: `90s`, `30m`, `2h`, `1h30m`, `7d` (a bare number is seconds).

>>> parse_duration("1h30m"), parse_duration("7d"), parse_duration("45")
(5400.0, 604800.0, 45.0)
>>> parse_duration("2 hours")
Traceback (most recent call last):
ValueError: invalid duration '2 hours': use e.g. 90s, 30m, 2h, 1h30m, 7d
>>> format_duration(5400), format_duration(42), format_duration(90061)
('1h30m', '42s', '1d1h1m1s')
"""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError naming the text and the accepted forms."""
    cleaned = str(text).strip()
    try:
        value = float(cleaned)
    except ValueError:
        parts = _PART.findall(cleaned)
        if not parts or "".join(n + u for n, u in parts) != cleaned:
            raise ValueError(
                f"invalid duration {text!r}: use e.g. 90s, 30m, 2h, 1h30m, 7d"
            ) from None
        return sum(float(n) * _SECONDS[u] for n, u in parts)
    if not math.isfinite(value):
        raise ValueError(f"invalid duration {text!r}: not a finite number of seconds")
    return value


def format_duration(seconds: float) -> str:
    """A whole number of seconds in the same notation, largest unit first (`0s` for none)."""
    left = max(0, round(seconds))
    out = []
    for unit, size in _SECONDS.items():
        count, left = divmod(left, int(size))
        if count:
            out.append(f"{count}{unit}")
    return "".join(out) or "0s"
