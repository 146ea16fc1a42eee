"""The bridge's line protocol, checked against localflux's parser of InfluxDB 3 Core's grammar."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localflux.influxdb.lineprotocol import parse_line
from localflux.telegraf.metric import EncodeError, Int, Metric, UInt, to_line

names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**63 - 1).map(Int),
    st.integers(0, 2**64 - 1).map(UInt),
    st.booleans(),
    st.text(max_size=30, alphabet=st.characters(blacklist_categories=("Cs",))),
)


def kind_of(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, UInt):
        return "uinteger"
    if isinstance(value, Int):
        return "integer"
    return "float" if isinstance(value, float) else "string"


def representable(metric: Metric) -> bool:
    """What line protocol can carry, per Core's grammar."""
    names = [metric.measurement, *metric.tags, *metric.tags.values(), *metric.fields]
    return (
        all(n and not any(c in n for c in "\t\n\r\x00") and not n.endswith("\\") for n in names)
        and not metric.measurement.startswith("#")
        and bool(metric.fields)
        and not set(metric.tags) & set(metric.fields)
        and "time" not in metric.tags
        and "time" not in metric.fields
    )


@given(
    measurement=names,
    tags=st.dictionaries(names, names, max_size=4),
    fields=st.dictionaries(names, values, max_size=4),
    time_ns=st.integers(-(2**62), 2**62),
)
def test_encoded_lines_parse_back_to_the_same_metric(measurement, tags, fields, time_ns) -> None:
    metric = Metric(measurement, tags, fields, time_ns)
    try:
        text = to_line(metric)
    except EncodeError:
        assert not representable(metric)
        return
    assert representable(metric)
    line = parse_line(text)
    assert line.table == measurement
    assert dict(line.tags) == tags
    assert line.timestamp == time_ns
    parsed = {key: (kind.value, value) for key, kind, value in line.fields}
    assert parsed == {key: (kind_of(value), value) for key, value in fields.items()}


def test_provider_names_with_commas_and_spaces_survive() -> None:
    metric = Metric(
        "machine_data",
        {"machineID": "machine1", "provider": "Castillo, Ortega and Ruiz"},
        {"load": 80.0},
        1,
    )
    assert dict(parse_line(to_line(metric)).tags)["provider"] == "Castillo, Ortega and Ruiz"


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (Metric("m", {"a": "x\ny"}, {"f": 1.0}, 1), "line break"),
        (Metric("m", {}, {"f": float("nan")}, 1), "not a finite number"),
        (Metric("m", {}, {}, 1), "no fields"),
        (Metric("m", {"f": "x"}, {"f": 1.0}, 1), "both tag and field"),
        (Metric("m", {}, {"time": 1.0}, 1), "reserved"),
        (Metric("m", {}, {"s": "x" * 70000}, 1), "longer than"),
        (Metric("", {}, {"f": 1.0}, 1), "empty measurement"),
        (Metric("m", {}, {"n": Int(2**63)}, 1), "out of range"),
    ],
)
def test_what_line_protocol_cannot_carry_is_an_error(metric, message) -> None:
    with pytest.raises(EncodeError, match=message):
        to_line(metric)
