"""Telegraf's json_v2 parser, for the options `telegraf_config` accepts, one metric per config.

Semantics follow Telegraf's (plugins/parsers/json_v2): JSON numbers are floats unless a `type`
says otherwise; a `tag`/`field` path that does not exist fails the whole message unless
`optional`; a null value is skipped; the timestamp path must exist; an `object` turns every
key below its path into a field (or a tag when listed), nested keys joined with `_` unless
`disable_prepend_keys`. Where Telegraf would split one message into several metrics with the
same tags and time (arrays), the bridge merges them into one, which is the row InfluxDB stores
either way; a message that would need two values for one name is rejected instead.

Every reason to reject a message raises `PayloadError` with a sentence for the log.

>>> from localflux.telegraf.config import DataSet, JsonV2
>>> config = JsonV2("machine_data", "time", "unix_ms", tags=(DataSet("metadata.machineID"),),
...                 fields=(DataSet("data.1.load", "float"),))
>>> parse_payload(b'{"metadata":{"machineID":"m1"},"data":[{"t":1},{"load":80}],"time":5}', [config])
[Metric(measurement='machine_data', tags={'machineID': 'm1'}, fields={'load': 80.0}, time_ns=5000000)]
>>> parse_payload(b'{"data":[]}', [config])
Traceback (most recent call last):
...
localflux.telegraf.json_v2.PayloadError: the timestamp path time returned NULL
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from localflux.telegraf.config import DataSet, JsonObject, JsonV2
from localflux.telegraf.metric import FieldValue, Int, Metric, UInt

_MISSING = object()
_NS_PER_UNIT = {"unix": 10**9, "unix_ms": 10**6, "unix_us": 10**3, "unix_ns": 1}


class PayloadError(ValueError):
    """This message cannot become a metric; the message says why."""


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def decode(payload: bytes) -> Any:
    """Strict JSON: UTF-8 (a BOM is skipped, as Telegraf does), no NaN or Infinity."""
    try:
        text = payload.decode("utf-8-sig")
        return json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"not valid JSON: {exc}") from None


def split_path(path: str) -> list[str]:
    """GJSON path elements: keys separated by dots, `\\.` for a literal dot."""
    parts, current, chars = [], "", iter(path)
    for ch in chars:
        if ch == "\\":
            current += next(chars, "")
        elif ch == ".":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def get_path(document: Any, path: str) -> Any:
    """The value at a plain GJSON path (keys, array indices, `@this`), or `_MISSING`."""
    if path == "@this":
        return document
    value = document
    for key in split_path(path):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return _MISSING
    return value


def _number_text(value: float | int) -> str:
    """A JSON number as Go's fmt.Sprint prints a float64 (80 -> "80", 80.5 -> "80.5")."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def convert(value: Any, kind: str, name: str) -> FieldValue:
    """A JSON scalar as the configured `type` ("" keeps JSON's: numbers are floats)."""

    def fail(reason: str = "") -> PayloadError:
        shown = json.dumps(value)[:40]
        return PayloadError(f"{name}: cannot convert {shown} to {kind or 'a value'}{reason}")

    if isinstance(value, bool):
        if kind in ("", "bool"):
            return value
        if kind == "string":
            return "true" if value else "false"
        if kind == "int":
            return Int(value)
        if kind == "uint":
            return UInt(value)
        raise fail()
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise fail(" (not finite)")
        if kind in ("", "float"):
            return float(value)
        if kind == "string":
            return _number_text(value)
        if kind == "int":
            return Int(int(value))
        if kind == "uint":
            if value < 0:
                raise fail(" (negative)")
            return UInt(int(value))
        if value in (0, 1):
            return bool(value)
        raise fail()
    if isinstance(value, str):
        try:
            if kind in ("", "string"):
                return value
            if kind == "float":
                number = float(value)
                if not math.isfinite(number):
                    raise ValueError
                return number
            if kind == "int":
                return Int(int(value, 10))
            if kind == "uint":
                if value.strip().startswith("-"):
                    raise ValueError
                return UInt(int(value, 10))
            if value in ("1", "t", "T", "TRUE", "true", "True"):
                return True
            if value in ("0", "f", "F", "FALSE", "false", "False"):
                return False
        except ValueError:
            pass
        raise fail()
    raise fail(" (not a single value)")


def timestamp_ns(value: Any, fmt: str, path: str) -> int:
    """Epoch seconds/ms/us/ns (number or numeric string) as integer nanoseconds, exactly."""
    if value is _MISSING or value is None:
        raise PayloadError(f"the timestamp path {path} returned NULL")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError(f"the timestamp at {path} is not a number: {json.dumps(value)[:40]}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise PayloadError(f"the timestamp at {path} is not a number: {value!r}") from None
    if not number.is_finite():
        raise PayloadError(f"the timestamp at {path} is not finite")
    ns = int(number * _NS_PER_UNIT[fmt])
    if not -(2**63) <= ns < 2**63:
        raise PayloadError(f"the timestamp at {path} is out of range: {value}")
    return ns


def _put(target: dict[str, Any], name: str, value: Any) -> None:
    if name in target and target[name] != value:
        raise PayloadError(
            f"{name!r} has several values; Telegraf would split this message into several "
            "metrics, which the bridge does not do"
        )
    target[name] = value


def _datasets(document: Any, sets: Sequence[DataSet], tag: bool, tags: dict, fields: dict) -> None:
    for ds in sets:
        value = get_path(document, ds.path)
        if value is _MISSING:
            if ds.optional:
                continue
            raise PayloadError(f"the path {ds.path} doesn't exist")
        if value is None:
            continue
        if isinstance(value, dict | list):
            raise PayloadError(f"the path {ds.path} holds an object or array, not a value")
        if tag:
            _put(tags, ds.name, convert(value, "string", ds.name))
        else:
            _put(fields, ds.name, convert(value, ds.type, ds.name))


class _ObjectWalker:
    """Flattens one `object` config's subtree the way Telegraf names keys."""

    def __init__(self, config: JsonObject, tags: dict, fields: dict) -> None:
        self.config = config
        self.tags = tags
        self.fields = fields

    def included(self, name: str, value: Any) -> bool:
        wanted = (*self.config.included_keys, *self.config.tags)
        if not self.config.included_keys or name in wanted:
            return True
        return isinstance(value, dict | list) and any(k.startswith(name) for k in wanted)

    def walk(self, value: Any, set_name: str, key_name: str = "") -> None:
        if isinstance(value, list):
            for item in value:
                self.walk(item, set_name, key_name)
            return
        if not isinstance(value, dict):
            self.leaf(value, set_name, key_name)
            return
        for key, child in value.items():
            child_key = key.replace(" ", "_")
            name = f"{set_name}_{child_key}" if set_name else child_key
            if name in self.config.excluded_keys or not self.included(name, child):
                continue
            self.walk(child, name, child_key)

    def leaf(self, value: Any, name: str, key_name: str) -> None:
        if value is None:
            return
        output = key_name if self.config.disable_prepend_keys else name
        output = self.config.renames.get(name, output)
        if name in self.config.tags:
            _put(self.tags, output, convert(value, "string", output))
        else:
            _put(self.fields, output, convert(value, self.config.fields.get(name, ""), output))


def parse_document(document: Any, config: JsonV2, received_ns: int) -> Metric:
    tags: dict[str, str] = {}
    fields: dict[str, FieldValue] = {}
    when = received_ns
    if config.timestamp_path:
        value = get_path(document, config.timestamp_path)
        when = timestamp_ns(value, config.timestamp_format, config.timestamp_path)
    _datasets(document, config.fields, False, tags, fields)
    _datasets(document, config.tags, True, tags, fields)
    for obj in config.objects:
        subtree = get_path(document, obj.path)
        if subtree is _MISSING:
            if obj.optional:
                continue
            raise PayloadError(f"the path {obj.path} doesn't exist")
        if not isinstance(subtree, dict | list):
            raise PayloadError(f"the object path {obj.path} holds a single value")
        _ObjectWalker(obj, tags, fields).walk(subtree, "")
    if not fields:
        raise PayloadError("no fields: nothing to write")
    # Telegraf's serializer leaves out tags with an empty value.
    return Metric(config.measurement_name, {k: v for k, v in tags.items() if v}, fields, when)


def parse_payload(
    payload: bytes, configs: Sequence[JsonV2], received_ns: int | None = None
) -> list[Metric]:
    """One metric per json_v2 config; `received_ns` stamps configs without a timestamp path."""
    document = decode(payload)
    now = time.time_ns() if received_ns is None else received_ns
    return [parse_document(document, config, now) for config in configs]
