"""Query results as Core's HTTP API writes them: json, jsonl, csv, pretty, parquet.

Core uses arrow-rs writers: JSON rows omit nulls, timestamps print as
`2024-01-01T00:00:00` with 3, 6 or 9 fractional digits only when needed, tags print as
strings, and `pretty` is arrow's ASCII table.

>>> import pyarrow as pa
>>> t = pa.table({"host": pa.array(["a", None]).dictionary_encode(),
...               "time": pa.array([0, 1_500_000], pa.timestamp("ns")), "v": [1.5, None]})
>>> render(t, "json")[0].decode()
'[{"host":"a","time":"1970-01-01T00:00:00","v":1.5},{"time":"1970-01-01T00:00:00.001500"}]'
>>> print(render(t, "csv")[0].decode(), end="")
host,time,v
a,1970-01-01T00:00:00,1.5
,1970-01-01T00:00:00.001500,
>>> print(render(t, "pretty")[0].decode())
+------+----------------------------+-----+
| host | time                       | v   |
+------+----------------------------+-----+
| a    | 1970-01-01T00:00:00        | 1.5 |
|      | 1970-01-01T00:00:00.001500 |     |
+------+----------------------------+-----+
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CONTENT_TYPES = {
    "json": "application/json",
    "jsonl": "application/jsonl",
    "csv": "text/csv",
    "pretty": "text/plain; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
_ACCEPT = {
    "application/vnd.apache.parquet": "parquet",
    "text/csv": "csv",
    "text/plain": "pretty",
    "application/jsonl": "jsonl",
    "application/json": "json",
}
# Rows converted to text at a time: bounds the memory of a large answer.
CHUNK_ROWS = 65536


def format_from_accept(accept: str | None) -> str:
    """The format an Accept header asks for; anything unknown (a browser's) means json."""
    for part in (accept or "").split(","):
        chosen = _ACCEPT.get(part.split(";")[0].strip())
        if chosen:
            return chosen
    return "json"


class AnswerTooLarge(ValueError):
    """A materialised answer (json, jsonl, csv, pretty) grew past the byte limit."""


def render(table: pa.Table, fmt: str) -> tuple[bytes, str]:
    """The response body and its content type."""
    out = io.BytesIO()
    write(table, fmt, out)
    return out.getvalue(), CONTENT_TYPES[fmt]


def write(table: pa.Table, fmt: str, out: BinaryIO, limit: int | None = None) -> None:
    """Write the body to `out`, `CHUNK_ROWS` rows at a time; raise AnswerTooLarge as soon as
    a text format passes `limit` bytes, so memory stays bounded however large the result.
    Parquet is written whole and never capped (it is the format for large answers).

    >>> write(pa.table({"v": list(range(100))}), "csv", io.BytesIO(), limit=100)
    Traceback (most recent call last):
    ...
    localflux.influxdb.formats.AnswerTooLarge: the answer is larger than 100 bytes (LOCALFLUX_MAX_ANSWER_MB); use format=parquet or Arrow Flight for large results, or narrow the query
    """
    if fmt == "parquet":
        pq.write_table(table, out)
        return
    start = out.tell()
    names = table.column_names
    widths = _widths(table) if fmt == "pretty" else []
    if fmt == "json":
        out.write(b"[")
    elif fmt == "csv" and (table.num_rows or names):
        out.write(_csv([names]))
    elif fmt == "pretty":
        out.write(_pretty_header(names, widths).encode())
    first = True
    for offset in range(0, table.num_rows, CHUNK_ROWS):
        chunk = table.slice(offset, CHUNK_ROWS)
        if fmt in ("json", "jsonl"):
            rows = _json_rows(chunk)
            if fmt == "json":
                text = ",".join(_dumps(row) for row in rows)
                out.write((text if first else "," + text).encode())
            else:
                out.write("".join(_dumps(row) + "\n" for row in rows).encode())
        else:
            texts = _texts(chunk)
            rows_text = zip(*texts, strict=True) if texts else ([] for _ in range(chunk.num_rows))
            if fmt == "csv":
                out.write(_csv(rows_text))
            else:
                out.write("".join("\n" + _pretty_row(row, widths) for row in rows_text).encode())
        first = False
        if limit is not None and out.tell() - start > limit:
            raise AnswerTooLarge(
                f"the answer is larger than {limit} bytes (LOCALFLUX_MAX_ANSWER_MB); use "
                "format=parquet or Arrow Flight for large results, or narrow the query"
            )
    if fmt == "json":
        out.write(b"]")
    elif fmt == "pretty" and table.num_rows and names:
        out.write(("\n" + _rule(widths)).encode())


def _dumps(row: dict[str, object]) -> str:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)


def _json_rows(table: pa.Table) -> list[dict[str, object]]:
    """Row objects without nulls (Core's JSON writer omits them)."""
    columns = [_column_values(table.column(i)) for i in range(table.num_columns)]
    if not columns:
        return [{} for _ in range(table.num_rows)]
    names = table.column_names
    return [
        {name: value for name, value in zip(names, row, strict=True) if value is not None}
        for row in zip(*columns, strict=True)
    ]


def _texts(table: pa.Table) -> list[list[str]]:
    return [
        [_text(value) for value in _column_values(table.column(i))]
        for i in range(table.num_columns)
    ]


def _csv(rows: Iterable[Iterable[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()


def _widths(table: pa.Table) -> list[int]:
    """Column widths of the pretty table: one pass over the rows before writing any."""
    widths = [len(name) for name in table.column_names]
    for offset in range(0, table.num_rows, CHUNK_ROWS):
        for position, column in enumerate(_texts(table.slice(offset, CHUNK_ROWS))):
            widths[position] = max([widths[position]] + [len(text) for text in column])
    return widths


def _rule(widths: list[int]) -> str:
    return "+" + "+".join("-" * (w + 2) for w in widths) + "+"


def _pretty_row(values: Iterable[str], widths: list[int]) -> str:
    return "|" + "|".join(f" {v.ljust(w)} " for v, w in zip(values, widths, strict=True)) + "|"


def _pretty_header(names: list[str], widths: list[int]) -> str:
    rule = _rule(widths)
    return "\n".join([rule, _pretty_row(names, widths), rule])


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _column_values(column: pa.ChunkedArray) -> list[object]:
    """JSON-ready Python values for one column."""
    data_type = column.type
    if pa.types.is_dictionary(data_type):
        column = column.cast(data_type.value_type)
        data_type = data_type.value_type
    if pa.types.is_timestamp(data_type):
        return _timestamps(column)
    if pa.types.is_floating(data_type):
        return [
            None if v is None or math.isnan(v) or math.isinf(v) else v for v in column.to_pylist()
        ]
    if (
        pa.types.is_integer(data_type)
        or pa.types.is_string(data_type)
        or pa.types.is_boolean(data_type)
    ):
        return column.to_pylist()
    if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return column.cast(pa.string()).to_pylist()
    values = column.to_pylist()
    return [
        v if v is None or isinstance(v, (int, float, str, bool, list, dict)) else str(v)
        for v in values
    ]


def _timestamps(column: pa.ChunkedArray) -> list[str | None]:
    """arrow-rs display format: seconds, then a fraction of 3, 6 or 9 digits when non-zero."""
    data_type = column.type
    ns = column.cast(pa.timestamp("ns", data_type.tz)).cast(pa.int64())
    valid = np.asarray(ns.is_valid())
    values = ns.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    whole = pa.array(np.floor_divide(values, 10**9)).cast(pa.timestamp("s"))
    seconds = pc.strftime(whole, format="%Y-%m-%dT%H:%M:%S").to_pylist()
    suffix = "+00:00" if data_type.tz else ""
    out: list[str | None] = []
    for text, value, ok in zip(seconds, values.tolist(), valid.tolist(), strict=True):
        fraction = value % 10**9
        if not ok:
            out.append(None)
        elif fraction == 0:
            out.append(text + suffix)
        elif fraction % 10**6 == 0:
            out.append(f"{text}.{fraction // 10**6:03d}{suffix}")
        elif fraction % 10**3 == 0:
            out.append(f"{text}.{fraction // 10**3:06d}{suffix}")
        else:
            out.append(f"{text}.{fraction:09d}{suffix}")
    return out
