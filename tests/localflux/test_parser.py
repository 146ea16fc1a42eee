"""The columnar fast path parses exactly as the per-line parser (the grammar's definition)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localflux.influxdb import lineprotocol as lp
from localflux.influxdb.model import Kind

NAME_CHARS = "abcxyzAZ09_é ,=\\\"'"
# Escaped in names (backslash too, so a backslash before an escapable character stays one).
KEY_SPECIALS = ",= \\"
MEASUREMENT_SPECIALS = ", \\"


def _escape(text: str, specials: str) -> str:
    return "".join("\\" + c if c in specials else c for c in text)


names = st.text(NAME_CHARS, min_size=1, max_size=6).filter(
    lambda s: not s.endswith("\\") and s != "time"
)
measurements = names.filter(lambda s: not s.startswith("#"))
# Tag value pieces as (written, read): plain characters, escapes, and backslash pairs that are
# no escape and read as written (a backslash before a tab or a newline included).
TAG_PIECES = [(c, c) for c in "abcAZ09_é=\"'"]
TAG_PIECES += [("\\" + c, c) for c in KEY_SPECIALS]
TAG_PIECES += [("\\" + c, "\\" + c) for c in 'd"é\t\n']


@st.composite
def written_tag_values(draw) -> tuple[str, str]:
    """A tag value as a client might write it, and as Core reads it."""
    pieces = draw(st.lists(st.sampled_from(TAG_PIECES), min_size=1, max_size=6))
    return "".join(w for w, _ in pieces), "".join(r for _, r in pieces)


tag_values = names.map(lambda v: (_escape(v, KEY_SPECIALS), v)) | written_tag_values().filter(
    lambda pair: not pair[1].endswith("\\")  # Core refuses a value ending in a backslash
)
kinds = st.sampled_from([Kind.FLOAT, Kind.INTEGER, Kind.UINTEGER, Kind.STRING, Kind.BOOLEAN])
BOOLEANS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True}
BOOLEANS.update({"f": False, "F": False, "false": False, "False": False, "FALSE": False})


@st.composite
def shapes(draw):
    tags = draw(st.lists(names, max_size=3, unique=True))
    fields = draw(
        st.lists(names.filter(lambda n: n not in tags), min_size=1, max_size=3, unique=True)
    )
    return draw(measurements), tags, [(name, draw(kinds)) for name in fields]


def _value(draw, kind: Kind) -> tuple[str, object]:
    if kind is Kind.FLOAT:
        value = draw(st.floats(allow_nan=False, allow_infinity=False, width=64))
        return repr(value), value
    if kind is Kind.INTEGER:
        value = draw(st.integers(-(2**63), 2**63 - 1))
        return f"{value}i", value
    if kind is Kind.UINTEGER:
        value = draw(st.integers(0, 2**64 - 1))
        return f"{value}u", value
    if kind is Kind.STRING:
        value = draw(st.text("ab \\\"',=\né", max_size=8))
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"', value
    spelling = draw(st.sampled_from(sorted(BOOLEANS)))
    return spelling, BOOLEANS[spelling]


@st.composite
def bodies(draw):
    """Several shapes, each repeated often enough for the columnar path to take it."""
    lines, expected = [], []
    for measurement, tags, fields in draw(st.lists(shapes(), min_size=1, max_size=3)):
        for _ in range(draw(st.integers(lp.MIN_SHAPE_LINES, 60))):
            written = [draw(tag_values) for _ in tags]
            values = [_value(draw, kind) for _, kind in fields]
            stamp = draw(st.none() | st.integers(-(2**63), 2**63 - 1))
            text = _escape(measurement, MEASUREMENT_SPECIALS)
            text += "".join(
                f",{_escape(k, KEY_SPECIALS)}={v}" for k, (v, _) in zip(tags, written, strict=True)
            )
            text += " " + ",".join(
                f"{_escape(name, KEY_SPECIALS)}={literal}"
                for (name, _), (literal, _) in zip(fields, values, strict=True)
            )
            text += "" if stamp is None else f" {stamp}"
            lines.append(text)
            expected.append(
                (
                    measurement,
                    {k: v for k, (_, v) in zip(tags, written, strict=True)},
                    {
                        name: (kind, value)
                        for (name, kind), (_, value) in zip(fields, values, strict=True)
                    },
                    stamp,
                )
            )
    order = draw(st.permutations(range(len(lines))))
    return [lines[i] for i in order], [expected[i] for i in order]


def _rows(parsed: lp.Parsed) -> dict[int, tuple]:
    """Every parsed line as (table, tags, fields, timestamp), keyed by line number."""
    result = {}
    for group in parsed.groups:
        stamps = group.timestamps.to_pylist()
        tag_values = {k: v.to_pylist() for k, v in group.tags.items()}
        field_values = {k: (kind, v.to_pylist()) for k, (kind, v) in group.fields.items()}
        for i, row in enumerate(group.rows.tolist()):
            result[row + 1] = (
                group.table,
                {k: v[i] for k, v in tag_values.items()},
                {k: (kind, v[i]) for k, (kind, v) in field_values.items()},
                stamps[i],
            )
    return result


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_columnar_and_per_line_parsing_agree(body):
    lines, expected = body
    parsed = lp.parse("\n".join(lines).encode())
    assert parsed.errors == []
    got = _rows(parsed)
    assert [got[n] for n in range(1, len(lines) + 1)] == expected
    for number, text in enumerate(lines, start=1):
        line = lp.parse_line(text)
        assert got[number] == (
            line.table,
            dict(line.tags),
            {k: (kind, v) for k, kind, v in line.fields},
            line.timestamp,
        )


def test_a_uniform_body_is_parsed_in_one_columnar_pass():
    lines = [f"cpu,host=h{i % 4} usage={i}.5,n={i}i {1700000000 + i}" for i in range(500)]
    first = lp.parse_line(lines[0])
    texts = lp.parse("\n".join(lines).encode()).lines
    group = lp._columnar_group(first, texts, np.arange(len(lines)))
    assert group is not None and len(group.rows) == 500
    assert group.fields["n"][1].to_pylist()[-1] == 499


def test_bad_lines_do_not_stop_the_columnar_path():
    good = [f"cpu usage={i} {i}" for i in range(100)]
    body = "\n".join(["cpu usage=oops 0", *good, "cpu usage=NaN 1"]).encode()
    parsed = lp.parse(body)
    assert [(e.line_number, e.message) for e in parsed.errors] == [
        (1, "No fields were provided"),
        (102, "No fields were provided"),
    ]
    assert sum(len(g.rows) for g in parsed.groups) == 100


def test_non_utf8_body_is_refused():
    try:
        lp.parse(b"cpu,host=\xff usage=1 1")
    except lp.BodyError as error:
        assert "utf8" in str(error)
    else:
        raise AssertionError("expected BodyError")


def test_auto_precision_guesses_from_magnitude():
    parsed = lp.parse(
        b"m f=1 1700000000\nm f=1 1700000000000\nm f=1 1700000000000000\nm f=1 1700000000000000000"
    )
    ((_, times),) = lp.to_nanoseconds(parsed, "auto", now_ns=0)
    assert times.tolist() == [1700000000 * 10**9] * 4


def test_time_overflow_after_scaling_is_a_line_error():
    parsed = lp.parse(b"m f=1 1\nm f=1 9223372036854775807")
    ((group, times),) = lp.to_nanoseconds(parsed, "s", now_ns=0)
    assert times.tolist() == [10**9]
    assert [(e.line_number, e.message) for e in parsed.errors] == [(2, "timestamp out of range")]


def test_a_backslash_escapes_a_newline_and_quotes_can_span_lines():
    body = b'm,t=a\\\nb f=1 1\nm s="x\ny",f=2 2\nm f=3 3'
    parsed = lp.parse(body)
    assert parsed.errors == []
    rows = _rows(parsed)
    assert rows[1] == ("m", {"t": "a\\\nb"}, {"f": (Kind.FLOAT, 1.0)}, 1)
    assert rows[2] == ("m", {}, {"s": (Kind.STRING, "x\ny"), "f": (Kind.FLOAT, 2.0)}, 2)
    assert rows[3] == ("m", {}, {"f": (Kind.FLOAT, 3.0)}, 3)


def test_escaped_tag_values_are_parsed_columnar(monkeypatch):
    """Real provider names, escaped as clients write them, in a body with plain names and
    with lines Core refuses: every line reads as the per-line parser reads it, the refused
    ones get its messages, and only a handful of lines reach it (the shapes' first lines
    and the refused ones)."""
    providers = ["Nordhoff, Weiss & Partner", "Bauer & Söhne", "Tanaka Seiki", "a=b"]
    lines = []
    for i in range(200):
        provider = f"provider{i % 3}" if i % 2 else providers[i // 2 % 4]
        lines.append(f"m,id=m{i % 7},provider={_escape(provider, KEY_SPECIALS)} v={i}.5 {i}")
    lines[50] = r"m,id=m1,provider=Acme\\ v=1.5 50"  # the value ends with a backslash
    lines[60] = f"m,id=m1,provider={'x' * (lp.STRING_LIMIT + 1)} v=1.5 60"
    per_line = []

    def counting_parse_line(text: str) -> lp.ParsedLine:
        per_line.append(text)
        return parse_line(text)

    parse_line = lp.parse_line
    monkeypatch.setattr(lp, "parse_line", counting_parse_line)
    parsed = lp.parse("\n".join(lines).encode())
    monkeypatch.undo()
    refused = {}
    for number in (51, 61):
        try:
            lp.parse_line(lines[number - 1])
        except lp.LineProtocolError as error:
            refused[number] = str(error)
    assert [(e.line_number, e.message) for e in parsed.errors] == sorted(refused.items())
    assert refused[51].startswith("Measurements, tag keys and values, and field keys may not")
    assert refused[61] == "String is greater than 64KB"
    got = _rows(parsed)
    assert sorted(got) == [n for n in range(1, 201) if n not in refused]
    for number, row in got.items():
        line = lp.parse_line(lines[number - 1])
        assert row == (
            line.table,
            dict(line.tags),
            {"v": (Kind.FLOAT, line.fields[0][2])},
            line.timestamp,
        )
    assert got[1][1] == {"id": "m0", "provider": "Nordhoff, Weiss & Partner"}
    assert got[7][1] == {"id": "m6", "provider": "a=b"}
    assert len(per_line) <= 10, per_line


def test_an_escaped_body_is_parsed_in_one_columnar_pass():
    lines = [rf"cpu,host=h\ {i % 4}\,x\=y\\z usage={i}.5 {i}" for i in range(100)]
    texts = lp.parse("\n".join(lines).encode()).lines
    group = lp._columnar_group(lp.parse_line(lines[0]), texts, np.arange(len(lines)))
    assert group is not None and len(group.rows) == 100
    assert group.tags["host"].to_pylist()[:2] == ["h 0,x=y\\z", "h 1,x=y\\z"]
