"""A parsed metric and its line protocol, escaped for InfluxDB 3 Core's grammar.

Everything the bridge writes goes through `to_line`, never through string pasting: names and
tag values are escaped (`\\`, `,`, `=`, space), strings quoted, types suffixed. What line
protocol cannot carry at all (a tab, newline or NUL in a name, a name ending in a backslash,
a non-finite float, a field named
`time`, a tag and field with one name) raises `EncodeError`, so a bad payload is skipped
with a reason instead of making InfluxDB reject the whole batch it travels in.

>>> m = Metric("machine_data", {"machineID": "m1", "provider": "Nordhoff, Weiss & Partner"},
...            {"temperature": 37.5, "load": 80.0, "count": Int(3), "ok": True}, 1700000000250000000)
>>> print(to_line(m))
machine_data,machineID=m1,provider=Nordhoff\\,\\ Weiss\\ &\\ Partner temperature=37.5,load=80.0,count=3i,ok=true 1700000000250000000
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STRING_LIMIT = 65536  # Core's maximum string field size
_UNREPRESENTABLE = ("\n", "\r", "\t", "\x00")


class EncodeError(ValueError):
    """The metric cannot be written as line protocol."""


class Int(int):
    """A value to write as a signed integer (`3i`); plain Python ints are written as floats
    unless wrapped, because JSON numbers are floats in Telegraf's json_v2."""


class UInt(int):
    """A value to write as an unsigned integer (`3u`)."""


FieldValue = float | Int | UInt | bool | str


@dataclass(frozen=True)
class Metric:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int


def _check(text: str, what: str) -> str:
    if not text:
        raise EncodeError(f"empty {what}")
    if any(ch in text for ch in _UNREPRESENTABLE):
        raise EncodeError(f"{what} {text!r} contains a tab, line break or NUL")
    if text.endswith("\\"):
        # Core rejects a trailing backslash even when escaped.
        raise EncodeError(f"{what} {text!r} ends with a backslash")
    return text


def escape_measurement(name: str) -> str:
    if name.startswith("#"):
        raise EncodeError(f"measurement {name!r} starts with '#' (a comment line)")
    return _check(name, "measurement").replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def escape_key(text: str, what: str = "key") -> str:
    """Tag keys, tag values and field keys."""
    return (
        _check(text, what)
        .replace("\\", "\\\\")
        .replace(",", "\\,")
        .replace("=", "\\=")
        .replace(" ", "\\ ")
    )


def field_value(name: str, value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, UInt):
        if not 0 <= value < 2**64:
            raise EncodeError(f"field {name!r}: {value} is out of range for an unsigned integer")
        return f"{int(value)}u"
    if isinstance(value, Int):
        if not -(2**63) <= value < 2**63:
            raise EncodeError(f"field {name!r}: {value} is out of range for an integer")
        return f"{int(value)}i"
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise EncodeError(f"field {name!r}: {value} is not a finite number")
        return repr(number)
    if isinstance(value, str):
        if len(value.encode("utf-8")) > STRING_LIMIT:
            raise EncodeError(f"field {name!r}: string longer than {STRING_LIMIT} bytes")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise EncodeError(f"field {name!r}: unsupported value {value!r}")


def to_line(metric: Metric) -> str:
    """One line of line protocol with a nanosecond timestamp."""
    if not metric.fields:
        raise EncodeError("no fields")
    clash = set(metric.tags) & set(metric.fields)
    if clash:
        raise EncodeError(f"{sorted(clash)} used as both tag and field")
    if "time" in metric.fields or "time" in metric.tags:
        raise EncodeError("'time' is reserved for the timestamp")
    head = escape_measurement(metric.measurement)
    for key in sorted(metric.tags):  # sorted, as Telegraf's serializer writes them
        head += f",{escape_key(key, 'tag key')}={escape_key(metric.tags[key], 'tag value')}"
    fields = ",".join(
        f"{escape_key(k, 'field key')}={field_value(k, v)}" for k, v in metric.fields.items()
    )
    return f"{head} {fields} {int(metric.time_ns)}"
