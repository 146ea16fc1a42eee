"""Units of the telemetry features, and how a value is shown to people.

The wire format carries bare numbers; plots and alerts need the same unit for the same feature,
so the mapping lives here once. A feature not listed is shown without a unit rather than with a
guessed one.

>>> label("temperature")
'temperature (°C)'
>>> label("humidity")
'humidity'
>>> format_value("power", 212.0)
'212 W'
>>> format_value("load", 87.456)
'87.46 %'
"""

from __future__ import annotations

import math

FEATURE_UNITS: dict[str, str] = {
    "temperature": "°C",
    "load": "%",
    "power": "W",
    "vibration": "Hz",
}


def label(feature: str) -> str:
    """Axis/field label: the feature name with its unit in brackets when known."""
    unit = FEATURE_UNITS.get(feature)
    return f"{feature} ({unit})" if unit else feature


def format_number(value: float) -> str:
    """Integers without decimals, other numbers with two; NaN as an em dash.

    >>> format_number(3.0), format_number(0.931), format_number(float("nan"))
    ('3', '0.93', '—')
    """
    if math.isnan(value):
        return "—"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.2f}"


def format_value(feature: str, value: float) -> str:
    """A value with its unit, as shown in alerts."""
    unit = FEATURE_UNITS.get(feature)
    return f"{format_number(value)} {unit}" if unit else format_number(value)
