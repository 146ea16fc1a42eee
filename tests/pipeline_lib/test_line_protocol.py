"""The column-wise line-protocol encoder, checked against localflux's parser of Core's grammar
and round-tripped through a real `localflux serve`."""

from __future__ import annotations

import itertools
import math

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from influx_magic.influx import InfluxSettings, connect, sql_ident, write_lines
from influx_magic.line_protocol import LineProtocolValueError, bodies, encode_table
from localflux.influxdb.lineprotocol import parse
from localflux.influxdb.model import Kind

# Names with everything line protocol escapes: spaces, commas, equals, quotes, backslashes
# (never at the end: Core refuses that even escaped), and no tab, line break or NUL.
name_chars = st.characters(
    blacklist_categories=("Cs",), blacklist_characters="\t\n\r\x00"
) | st.sampled_from(list(' ,="\\'))
names = st.text(name_chars, min_size=1, max_size=10).filter(
    lambda n: not n.endswith("\\") and n != "time"
)
measurements = names.filter(lambda n: not n.startswith("#"))
strings = st.text(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(list('"\\\n ')))
KINDS = {
    "float": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "integer": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "uinteger": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "boolean": (pa.bool_(), st.booleans()),
    "string": (pa.string(), strings),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[pa.Table, str, list[str], list[str], list[str]]:
    """A random table: measurement, 0-3 tags, 1-4 fields of random kinds, nullable values."""
    rows = draw(st.integers(1, 12))
    keys = draw(st.lists(names, min_size=1, max_size=7, unique=True))
    n_tags = draw(st.integers(0, min(3, len(keys) - 1)))
    tags, fields = keys[:n_tags], keys[n_tags:][:4]
    kinds = [draw(st.sampled_from(sorted(KINDS))) for _ in fields]
    columns: dict[str, pa.Array] = {
        "time": pa.array(
            draw(st.lists(st.integers(0, 2**62), min_size=rows, max_size=rows)),
            pa.timestamp("ns"),
        )
    }
    for tag in tags:
        values = st.none() | st.just("") | names
        columns[tag] = pa.array(draw(st.lists(values, min_size=rows, max_size=rows)), pa.string())
    for name, kind in zip(fields, kinds, strict=True):
        arrow_type, values = KINDS[kind]
        drawn = draw(st.lists(st.none() | values, min_size=rows, max_size=rows))
        columns[name] = pa.array(drawn, arrow_type)
    return pa.table(columns), draw(measurements), tags, fields, kinds


def expected_rows(table: pa.Table, tags: list[str], fields: list[str]) -> list[dict]:
    """What each written row should read back as: present tags, present (finite) fields,
    time in ns."""
    times = table.column("time").cast(pa.int64()).to_pylist()
    rows = []
    for row, time in zip(table.select([*tags, *fields]).to_pylist(), times, strict=True):
        field_values = {
            f: row[f]
            for f in fields
            if row[f] is not None and not (isinstance(row[f], float) and not math.isfinite(row[f]))
        }
        if field_values:
            rows.append(
                {"tags": {t: row[t] for t in tags if row[t]}, "fields": field_values, "time": time}
            )
    return rows


def parsed_rows(body: bytes) -> tuple[list[dict], dict[str, Kind], set[str]]:
    """The body as localflux's parser reads it: rows in line order, field kinds, tables."""
    parsed = parse(body)
    assert not parsed.errors, parsed.errors
    by_row: dict[int, dict] = {}
    kinds: dict[str, Kind] = {}
    for group in parsed.groups:
        times = group.timestamps.to_pylist()
        tags = {k: v.to_pylist() for k, v in group.tags.items()}
        fields = {k: v.to_pylist() for k, (_, v) in group.fields.items()}
        for i, row in enumerate(group.rows.tolist()):
            by_row[row] = {
                "tags": {k: v[i] for k, v in tags.items()},
                "fields": {k: v[i] for k, v in fields.items()},
                "time": times[i],
            }
        kinds.update({k: kind for k, (kind, _) in group.fields.items()})
    return [by_row[r] for r in sorted(by_row)], kinds, {g.table for g in parsed.groups}


@settings(max_examples=300, deadline=None)
@given(tables())
def test_lines_parse_back_to_the_same_rows(case) -> None:
    table, measurement, tags, fields, kinds = case
    encoded = encode_table(table, measurement, tags=tags, fields=fields)
    rows, parsed_kinds, seen = parsed_rows("".join(encoded.lines.to_pylist()).encode())

    want = expected_rows(table, tags, fields)
    assert rows == want
    assert encoded.dropped == table.num_rows - len(want)
    assert seen <= {measurement}
    for name, kind in zip(fields, kinds, strict=True):
        if name in parsed_kinds:
            assert parsed_kinds[name].value == kind


@pytest.mark.parametrize(
    ("measurement", "tag", "value", "message"),
    [
        ("m", "host", "a\nb", "line break"),
        ("m", "host", "ends\\", "trailing backslash"),
        ("m", "ho\tst", "a", "line break"),
        ("#m", "host", "a", "comment"),
        ("m\n", "host", "a", "line break"),
        ("m", "", "a", "empty tag key"),
    ],
)
def test_what_line_protocol_cannot_carry_is_refused(measurement, tag, value, message) -> None:
    table = pa.table({"time": pa.array([1], pa.timestamp("ns")), tag: [value], "f": [1.0]})
    with pytest.raises(LineProtocolValueError, match=message.split()[0]):
        encode_table(table, measurement, tags=[tag], fields=["f"])


def test_null_times_and_name_clashes_are_refused() -> None:
    table = pa.table({"time": pa.array([1, None], pa.timestamp("ns")), "f": [1.0, 2.0]})
    with pytest.raises(LineProtocolValueError, match="without a time"):
        encode_table(table, "m", tags=[], fields=["f"])
    with pytest.raises(LineProtocolValueError, match="distinct"):
        encode_table(table, "m", tags=["f"], fields=["f"])


def test_bodies_hold_whole_lines_under_the_limit() -> None:
    count = 5000
    table = pa.table(
        {
            "time": pa.array(range(count), pa.timestamp("ns")),
            "machineID": [f"machine {i % 37}" for i in range(count)],
            "score": [i / 7 for i in range(count)],
        }
    )
    encoded = encode_table(table, "anomaly_scores", tags=["machineID"], fields=["score"])
    limit = 4096
    parts = list(bodies(encoded.lines, limit))
    assert all(len(body) <= limit and body.endswith(b"\n") for body, _ in parts)
    assert sum(n for _, n in parts) == count
    assert b"".join(body for body, _ in parts).decode() == "".join(encoded.lines.to_pylist())


counter = itertools.count()


@pytest.mark.localflux_only
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=tables())
def test_round_trip_through_localflux(localflux_server, case) -> None:
    """Written through the official client as bytes, read back with SQL: the same rows."""
    table, measurement, tags, fields, _ = case
    measurement = f"{measurement}{next(counter)}"  # a fresh table (and column types) each time
    encoded = encode_table(table, measurement, tags=tags, fields=fields)
    client = connect(InfluxSettings(localflux_server.url, localflux_server.database))
    assert write_lines(client, encoded.lines, table=measurement, max_body_bytes=512) == len(encoded)
    want = expected_rows(table, tags, fields)
    if not want:
        return
    result = client.query(f"SELECT * FROM {sql_ident(measurement)}", mode="all")
    times = result.column("time").cast(pa.int64()).to_pylist()
    got = {
        (tuple(sorted((t, row[t]) for t in tags if row.get(t) is not None)), time): {
            f: row[f] for f in fields if row.get(f) is not None
        }
        for row, time in zip(result.to_pylist(), times, strict=True)
    }
    # Same series and time is one row in InfluxDB: the last write wins per field.
    merged: dict[tuple, dict] = {}
    for row in want:
        key = (tuple(sorted(row["tags"].items())), row["time"])
        merged.setdefault(key, {}).update(row["fields"])
    assert got == merged
