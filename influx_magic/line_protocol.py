"""Line protocol built column by column with Arrow compute, cut into bodies under a byte limit.

The influxdb3-python client's DataFrame serializer formats every row in Python (~40-60k rows/s
here), which made the export two thirds of a 10,000-machine run. Here a table becomes line
protocol in a handful of vectorised passes, and the result is an Arrow string array whose
buffer is sliced straight into request bodies, each handed to the official client as bytes.

Escaping follows InfluxDB 3 Core's grammar (the rules `localflux.lineprotocol` parses by):

* measurement: `\\` `,` and space get a backslash;
* tag keys, tag values and field keys: `\\` `,` `=` and space get a backslash;
* string field values: in double quotes, `\\` and `"` get a backslash (a newline may stay,
  inside the quotes);
* floats in their shortest round-trip form (`0.1`, `1e+300`), NaN and infinities left out;
  signed integers with `i`, unsigned with `u`, booleans `true`/`false`; time in ns.

What line protocol cannot carry is refused with `LineProtocolValueError` naming the column,
never written half: an empty name, a tab, line break or NUL in a name or tag value, one that
ends with a backslash (Core rejects that even escaped), a measurement starting with `#` (a
comment), a name used twice or `time` as a key, a string over 64 KiB, a null time. A null or
empty tag value leaves that tag out of the line; a null field leaves the field out; a row
without any field value is left out and counted (line protocol needs one field).

>>> table = pa.table({"time": pa.array([1, 2], pa.timestamp("ns")),
...                   "machineID": ["m 1", None], "score": [0.5, float("nan")], "n": [3, 4]})
>>> encoded = encode_table(table, "anomaly scores", tags=["machineID"], fields=["score", "n"])
>>> print("".join(encoded.lines.to_pylist()), end="")
anomaly\\ scores,machineID=m\\ 1 n=3i,score=0.5 1
anomaly\\ scores n=4i 2
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

STRING_LIMIT = 65536  # Core's largest string field and tag value, in bytes
# Rows encoded per pass: bounds the intermediate arrays, and lets the writer send the first
# slice while the next is built (one body of about 6 MB each for anomaly_scores).
SLICE_ROWS = 50_000
_UNREPRESENTABLE = "[\t\n\r\x00]"
_KEY_SPECIALS = r"([\\,= ])"
_MEASUREMENT_SPECIALS = r"([\\, ])"
_STRING_SPECIALS = r'(["\\])'
_ESCAPED = r"\\\1"  # RE2 rewrite: a backslash, then the matched character


class LineProtocolValueError(ValueError):
    """A name or value line protocol cannot carry; the message names the column."""


@dataclass(frozen=True)
class EncodedLines:
    """Line protocol for a table: `lines` (each ending in a newline), rows left out."""

    lines: pa.ChunkedArray
    dropped: int

    def __len__(self) -> int:
        return len(self.lines)


def encode_frame(
    frame: pd.DataFrame,
    measurement: str,
    *,
    tags: Sequence[str],
    fields: Sequence[str],
    time_column: str = "time",
) -> EncodedLines:
    """`encode_table` for a pandas frame (naive times are UTC, object columns of str/None
    become strings)."""
    return _joined(
        iter_frame_lines(frame, measurement, tags=tags, fields=fields, time_column=time_column)
    )


def iter_frame_lines(
    frame: pd.DataFrame,
    measurement: str,
    *,
    tags: Sequence[str],
    fields: Sequence[str],
    time_column: str = "time",
    slice_rows: int = SLICE_ROWS,
) -> Iterator[EncodedLines]:
    """A frame's line protocol slice by slice (each converted to Arrow only when its turn
    comes), so a writer can send one slice while the next is built.

    Names and every tag value are checked before the first slice is yielded; a string field
    over 64 KiB is refused at its slice.
    """
    missing = [c for c in [time_column, *tags, *fields] if c not in frame.columns]
    if missing:
        raise LineProtocolValueError(
            f"cannot write {measurement}: the frame lacks column(s) {', '.join(missing)}"
        )
    head, keys = _names(measurement, tags, fields, time_column)
    for name in tags:
        distinct = pd.unique(frame[name].dropna())
        _refuse(
            pa.array(np.asarray(distinct, dtype=object).astype(str), pa.string()),
            f"tag {name!r} value",
        )
    columns = list(dict.fromkeys([time_column, *tags, *fields]))
    for offset in range(0, len(frame), slice_rows):
        part = pa.Table.from_pandas(
            frame.iloc[offset : offset + slice_rows][columns], preserve_index=False
        )
        lines, dropped = _encode_slice(part, head, keys, tags, fields, time_column)
        yield EncodedLines(pa.chunked_array([lines], pa.string()), dropped)


def encode_table(
    table: pa.Table,
    measurement: str,
    *,
    tags: Sequence[str],
    fields: Sequence[str],
    time_column: str = "time",
) -> EncodedLines:
    """Line protocol for every row of `table`: one line per row with at least one field value.

    Field types come from the column types: floating -> float, signed -> `i`, unsigned ->
    `u`, boolean, string (or dictionary of strings) -> quoted string. Tags are written in the
    order given (Core sorts them itself).
    """
    head, keys = _names(measurement, tags, fields, time_column)
    return _joined(
        EncodedLines(pa.chunked_array([lines], pa.string()), dropped)
        for lines, dropped in (
            _encode_slice(table.slice(offset, SLICE_ROWS), head, keys, tags, fields, time_column)
            for offset in range(0, table.num_rows, SLICE_ROWS)
        )
    )


def _names(
    measurement: str, tags: Sequence[str], fields: Sequence[str], time_column: str
) -> tuple[str, dict[str, str]]:
    """The escaped measurement and keys, or `LineProtocolValueError`."""
    head = _measurement(measurement)
    keys = {name: _key(name, "tag key") for name in tags}
    keys.update({name: _key(name, "field key") for name in fields})
    names = [*tags, *fields]
    if len(set(names)) < len(names) or time_column in names or "time" in names:
        raise LineProtocolValueError(
            f"cannot write {measurement}: tag and field names must be distinct and not 'time' "
            f"(tags {list(tags)}, fields {list(fields)})"
        )
    if not fields:
        raise LineProtocolValueError(f"cannot write {measurement}: no field columns")
    return head, keys


def _joined(parts: Iterable[EncodedLines]) -> EncodedLines:
    chunks: list[pa.Array] = []
    dropped = 0
    for part in parts:
        chunks.extend(part.lines.chunks)
        dropped += part.dropped
    return EncodedLines(pa.chunked_array(chunks, pa.string()), dropped)


def _encode_slice(
    table: pa.Table,
    head: str,
    keys: dict[str, str],
    tags: Sequence[str],
    fields: Sequence[str],
    time_column: str,
) -> tuple[pa.Array, int]:
    """One join per line: fields that are never null are pasted in place; nullable ones as
    `,key=value` or nothing (when every field may be null, rows with none are left out)."""
    texts = {name: _field_text(table, name) for name in fields}
    always = [name for name in fields if texts[name].null_count == 0]
    pieces: list[pa.Array | str] = [_series_heads(table, head, keys, tags), " "]
    for index, name in enumerate(always):
        pieces += [("," if index else "") + keys[name] + "=", texts[name]]
    optional = [name for name in fields if name not in always]
    if always:
        for name in optional:
            segment = pc.binary_join_element_wise("," + keys[name] + "=", texts[name], "")
            pieces.append(segment.fill_null(""))
        keep = None
    else:
        # `,key=value` or "" each, then the first comma cut off. (Not Arrow's join with
        # null_handling="skip": in Arrow 25 it drops rows whose first values are all null.)
        segments = [
            pc.binary_join_element_wise("," + keys[name] + "=", texts[name], "").fill_null("")
            for name in optional
        ]
        joined = pc.utf8_slice_codeunits(pc.binary_join_element_wise(*segments, ""), 1)
        pieces.append(joined)
        keep = pc.greater(pc.binary_length(joined), 0)
    pieces += [" ", _time_text(table, time_column), "\n"]
    lines = pc.binary_join_element_wise(*pieces, "")
    if keep is None:
        return lines, 0
    kept = lines.filter(keep)
    return kept, table.num_rows - len(kept)


def _series_heads(
    table: pa.Table, head: str, keys: dict[str, str], tags: Sequence[str]
) -> pa.Array:
    """`measurement,tag=value,...` per row: built once per distinct tag combination (a
    machine), then taken for every row, so escaping costs per machine, not per point."""
    rows = table.num_rows
    if not tags:
        return pa.repeat(pa.scalar(head), rows)
    codes = np.zeros(rows, dtype=np.int64)
    segment_tables: list[tuple[np.ndarray, pa.Array]] = []
    combos = 1
    for name in tags:
        indices, segments = _tag_segments(table.column(name), name, keys[name])
        codes = codes * (len(segments) + 1) + indices
        combos, codes = _densify(codes)
        segment_tables.append((indices, segments))
    first = np.zeros(combos, dtype=np.int64)
    first[codes[::-1]] = np.arange(rows - 1, -1, -1)  # a row of each combination
    pieces: list[pa.Array | str] = [pa.repeat(pa.scalar(head), combos)]
    for indices, segments in segment_tables:
        chosen = indices[first]
        if not len(segments):  # the tag has no value in this slice
            continue
        values = segments.take(pa.array(np.maximum(chosen - 1, 0)))
        pieces.append(pc.if_else(pa.array(chosen > 0), values, ""))
    heads = pc.binary_join_element_wise(*pieces, "")
    return heads.take(pa.array(codes))


def _densify(codes: np.ndarray) -> tuple[int, np.ndarray]:
    uniques, inverse = np.unique(codes, return_inverse=True)
    return len(uniques), inverse.astype(np.int64)


def _tag_segments(column: pa.ChunkedArray, name: str, key: str) -> tuple[np.ndarray, pa.Array]:
    """Per row the 1-based index of its `,key=value` segment (0: no value), and the segments."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        try:
            values = values.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise LineProtocolValueError(
                f"tag {name!r}: cannot write {values.type} values as a tag"
            ) from None
    encoded = values.dictionary_encode()
    dictionary = encoded.dictionary.cast(pa.string())
    _refuse(dictionary, f"tag {name!r} value")
    escaped = pc.replace_substring_regex(dictionary, pattern=_KEY_SPECIALS, replacement=_ESCAPED)
    segments = pc.binary_join_element_wise(f",{key}=", escaped, "")
    # 1-based segment numbers; an empty value has none (0), like a null.
    numbers = np.arange(1, len(dictionary) + 1, dtype=np.int64)
    numbers[pc.equal(pc.binary_length(dictionary), 0).to_numpy(zero_copy_only=False)] = 0
    indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    present = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
    return np.where(present, numbers[indices] if len(numbers) else 0, 0), segments


def _field_text(table: pa.Table, name: str) -> pa.Array:
    """A field's values as line-protocol text; null where the value is to be left out."""
    values = table.column(name).combine_chunks()
    kind = values.type
    if pa.types.is_dictionary(kind):
        values = values.cast(kind.value_type)
        kind = values.type
    if pa.types.is_floating(kind):
        values = values.cast(pa.float64())
        finite = pc.is_finite(values)
        return pc.if_else(finite, values.cast(pa.string()), pa.scalar(None, pa.string()))
    if pa.types.is_boolean(kind):
        return values.cast(pa.string())
    if pa.types.is_signed_integer(kind):
        return pc.binary_join_element_wise(values.cast(pa.string()), "i", "")
    if pa.types.is_unsigned_integer(kind):
        return pc.binary_join_element_wise(values.cast(pa.string()), "u", "")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        longest = pc.max(pc.binary_length(values)).as_py() or 0
        if longest > STRING_LIMIT:
            raise LineProtocolValueError(
                f"field {name!r}: a string of {longest} bytes is over Core's {STRING_LIMIT}"
            )
        escaped = pc.replace_substring_regex(
            values.cast(pa.string()), pattern=_STRING_SPECIALS, replacement=_ESCAPED
        )
        return pc.binary_join_element_wise('"', escaped, '"', "")
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.string())
    raise LineProtocolValueError(f"field {name!r}: cannot write {kind} values as a field")


def _time_text(table: pa.Table, name: str) -> pa.Array:
    """Nanoseconds since the epoch as text (a timestamp column of any unit, or int64 ns)."""
    values = table.column(name).combine_chunks()
    if values.null_count:
        raise LineProtocolValueError(f"column {name!r}: {values.null_count} row(s) without a time")
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.timestamp("ns", values.type.tz)).cast(pa.int64())
    elif not pa.types.is_integer(values.type):
        raise LineProtocolValueError(
            f"column {name!r}: a time must be a timestamp, not {values.type}"
        )
    return values.cast(pa.string())


def _refuse(values: pa.Array, what: str) -> None:
    """Raise when a name or tag value cannot be written (checked on distinct values only)."""
    bad = pc.or_(
        pc.match_substring_regex(values, _UNREPRESENTABLE),
        pc.or_(pc.ends_with(values, "\\"), pc.greater(pc.binary_length(values), STRING_LIMIT)),
    )
    if pc.any(bad).as_py():
        example = values.filter(bad)[0].as_py()
        raise LineProtocolValueError(
            f"{what} {example[:80]!r} cannot be written as line protocol (a tab, line break or "
            f"NUL, a trailing backslash, or over {STRING_LIMIT} bytes)"
        )


def _measurement(name: str) -> str:
    if name.startswith("#"):
        raise LineProtocolValueError(f"measurement {name!r} starts with '#' (a comment line)")
    _refuse_name(name, "measurement")
    return pc.replace_substring_regex(
        pa.array([name]), pattern=_MEASUREMENT_SPECIALS, replacement=_ESCAPED
    )[0].as_py()


def _key(name: str, what: str) -> str:
    _refuse_name(name, what)
    return pc.replace_substring_regex(
        pa.array([name]), pattern=_KEY_SPECIALS, replacement=_ESCAPED
    )[0].as_py()


def _refuse_name(name: str, what: str) -> None:
    if not name:
        raise LineProtocolValueError(f"empty {what}")
    _refuse(pa.array([name]), what)


def bodies(lines: pa.ChunkedArray | pa.Array, max_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Request bodies of whole lines, each at most `max_bytes`, sliced from the arrays'
    buffers without touching lines one by one; with the number of lines in each."""
    chunks = lines.chunks if isinstance(lines, pa.ChunkedArray) else [lines]
    for chunk in chunks:
        yield from _chunk_bodies(chunk, max_bytes)


def _chunk_bodies(lines: pa.Array, max_bytes: int) -> Iterator[tuple[bytes, int]]:
    if not len(lines):
        return
    offset_type = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(lines.buffers()[1], dtype=offset_type)
    offsets = offsets[lines.offset : lines.offset + len(lines) + 1].astype(np.int64)
    data = lines.buffers()[2]
    if np.diff(offsets).max() > max_bytes:
        raise LineProtocolValueError(f"one line is larger than a body ({max_bytes} bytes)")
    first = 0
    while first < len(lines):
        last = int(np.searchsorted(offsets, offsets[first] + max_bytes, side="right")) - 1
        body = data.slice(int(offsets[first]), int(offsets[last] - offsets[first])).to_pybytes()
        yield body, last - first
        first = last
