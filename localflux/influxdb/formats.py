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


def format_from_accept(accept: str | None) -> str:
    """The format an Accept header asks for; anything unknown (a browser's) means json."""
    for part in (accept or "").split(","):
        chosen = _ACCEPT.get(part.split(";")[0].strip())
        if chosen:
            return chosen
    return "json"


def render(table: pa.Table, fmt: str) -> tuple[bytes, str]:
    """The response body and its content type."""
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue(), CONTENT_TYPES[fmt]
    columns = [_column_values(table.column(i)) for i in range(table.num_columns)]
    names = table.column_names
    if fmt in ("json", "jsonl"):
        rows = (
            [
                {name: value for name, value in zip(names, row, strict=True) if value is not None}
                for row in zip(*columns, strict=True)
            ]
            if columns
            else [{} for _ in range(table.num_rows)]
        )
        if fmt == "json":
            body = json.dumps(rows, separators=(",", ":"), ensure_ascii=False)
        else:
            body = "".join(
                json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in rows
            )
        return body.encode(), CONTENT_TYPES[fmt]
    texts = [[_text(value) for value in values] for values in columns]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if table.num_rows or names:
            writer.writerow(names)
        writer.writerows(zip(*texts, strict=True))
        return out.getvalue().encode(), CONTENT_TYPES[fmt]
    return _pretty(names, texts).encode(), CONTENT_TYPES["pretty"]


def _pretty(names: list[str], texts: list[list[str]]) -> str:
    widths = [
        max([len(name)] + [len(t) for t in column])
        for name, column in zip(names, texts, strict=True)
    ]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [
        rule,
        "|" + "|".join(f" {n.ljust(w)} " for n, w in zip(names, widths, strict=True)) + "|",
        rule,
    ]
    for row in zip(*texts, strict=True):
        lines.append(
            "|" + "|".join(f" {v.ljust(w)} " for v, w in zip(row, widths, strict=True)) + "|"
        )
    if texts and texts[0]:
        lines.append(rule)
    return "\n".join(lines)


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
