"""The bridge's json_v2 parser: Telegraf's semantics for paths, types, nulls, objects, timestamps."""

from __future__ import annotations

import json

import pytest

from localflux.telegraf.config import DataSet, JsonObject, JsonV2
from localflux.telegraf.json_v2 import PayloadError, parse_payload
from localflux.telegraf.metric import Int, UInt

READING = {
    "metadata": {"machineID": "machine1", "barcode": "96385074", "provider": "Tanaka Seiki"},
    "data": [{"temperature": 37.5}, {"load": 80}, {"power": 212.3}, {"vibration": 83.1}],
    "time": 1700000000250,
}
SHIPPED = JsonV2(
    "machine_data",
    "time",
    "unix_ms",
    tags=(DataSet("metadata.machineID"), DataSet("metadata.provider")),
    fields=tuple(
        DataSet(f"data.{i}.{name}", "float")
        for i, name in enumerate(["temperature", "load", "power", "vibration"])
    ),
)


def parse(document: object, config: JsonV2 = SHIPPED):
    [metric] = parse_payload(json.dumps(document).encode(), [config], received_ns=42)
    return metric


def test_a_reading_becomes_one_row_with_float_fields() -> None:
    metric = parse(READING)
    assert metric.tags == {"machineID": "machine1", "provider": "Tanaka Seiki"}
    assert metric.fields == {"temperature": 37.5, "load": 80.0, "power": 212.3, "vibration": 83.1}
    assert type(metric.fields["load"]) is float  # 80 in JSON is a float, as in Telegraf
    assert metric.time_ns == 1_700_000_000_250_000_000


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'{"time": NaN}', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (json.dumps({**READING, "metadata": None}).encode(), "metadata.machineID doesn't exist"),
        (json.dumps({k: v for k, v in READING.items() if k != "metadata"}).encode(), "doesn't"),
        (json.dumps({**READING, "data": [{"temperature": "hot"}]}).encode(), "cannot convert"),
        (json.dumps({**READING, "data": READING["data"][:2]}).encode(), "data.2.power"),
        (json.dumps({**READING, "time": None}).encode(), "returned NULL"),
        (json.dumps({**READING, "time": "yesterday"}).encode(), "not a number"),
        (json.dumps({**READING, "time": 10**30}).encode(), "out of range"),
        (json.dumps({**READING, "metadata": {"machineID": {"a": 1}}}).encode(), "object or array"),
        (json.dumps({**READING, "data": [{"temperature": True}]}).encode(), "cannot convert"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_payload(payload, [SHIPPED])


def test_a_bom_is_skipped_as_telegraf_does() -> None:
    payload = b"\xef\xbb\xbf" + json.dumps(READING).encode()
    assert parse_payload(payload, [SHIPPED])[0].tags["machineID"] == "machine1"


def test_numeric_strings_convert_to_the_configured_type() -> None:
    document = {**READING, "data": [{"temperature": "37.5"}, *READING["data"][1:]]}
    assert parse(document).fields["temperature"] == 37.5
    config = JsonV2(
        "m",
        fields=(
            DataSet("n", "int"),
            DataSet("u", "uint"),
            DataSet("b", "bool"),
            DataSet("s", "string"),
            DataSet("f"),
        ),
        tags=(DataSet("id"),),
    )
    metric = parse({"n": "7", "u": 3.9, "b": 1, "s": 2.5, "f": 4, "id": 12}, config)
    assert metric.fields == {"n": Int(7), "u": UInt(3), "b": True, "s": "2.5", "f": 4.0}
    assert type(metric.fields["n"]) is Int and type(metric.fields["u"]) is UInt
    assert metric.tags == {"id": "12"}  # numbers as tags print as Go does
    assert metric.time_ns == 42  # no timestamp path: the receive time


def test_optional_paths_and_nulls_are_skipped() -> None:
    config = JsonV2("m", fields=(DataSet("a"), DataSet("b", optional=True), DataSet("c")))
    assert parse({"a": 1, "c": None}, config).fields == {"a": 1.0}
    with pytest.raises(PayloadError, match="no fields"):
        parse({"a": None, "c": None}, config)


def test_rename_and_escaped_dots_in_paths() -> None:
    config = JsonV2("m", fields=(DataSet("x\\.y", rename="xy"), DataSet("deep.er.value")))
    assert parse({"x.y": 1, "deep": {"er": {"value": 2}}}, config).fields == {
        "xy": 1.0,
        "value": 2.0,
    }


def test_object_mode_flattens_like_telegraf() -> None:
    config = JsonV2(
        "machine_data",
        "time",
        "unix_ms",
        objects=(
            JsonObject(
                "@this",
                tags=("metadata_machineID", "metadata_provider"),
                excluded_keys=("metadata_barcode", "time"),
                fields={"data_load": "int"},
                renames={"data_power": "watts"},
            ),
        ),
    )
    metric = parse(READING, config)
    assert metric.tags == {"metadata_machineID": "machine1", "metadata_provider": "Tanaka Seiki"}
    assert metric.fields == {
        "data_temperature": 37.5,
        "data_load": Int(80),
        "watts": 212.3,
        "data_vibration": 83.1,
    }


def test_object_mode_included_keys_keep_only_those_and_the_tags() -> None:
    config = JsonV2(
        "m",
        objects=(
            JsonObject(
                "@this",
                tags=("metadata_machineID",),
                included_keys=("data_load",),
                disable_prepend_keys=True,
            ),
        ),
    )
    metric = parse(READING, config)
    assert metric.tags == {"machineID": "machine1"}
    assert metric.fields == {"load": 80.0}


def test_a_message_telegraf_would_split_into_several_metrics_is_rejected() -> None:
    config = JsonV2("m", objects=(JsonObject("readings", disable_prepend_keys=True),))
    with pytest.raises(PayloadError, match="several values"):
        parse({"readings": [{"load": 1}, {"load": 2}]}, config)


def test_empty_tag_values_are_left_out() -> None:
    metric = parse({**READING, "metadata": {**READING["metadata"], "provider": ""}})
    assert metric.tags == {"machineID": "machine1"}


def test_timestamps_in_every_unit_are_exact() -> None:
    for fmt, value in [
        ("unix", 1700000000.25),
        ("unix_ms", "1700000000250"),
        ("unix_us", 1700000000250000),
        ("unix_ns", 1700000000250000000),
    ]:
        config = JsonV2("m", "t", fmt, fields=(DataSet("v"),))
        assert parse({"t": value, "v": 1}, config).time_ns == 1_700_000_000_250_000_000
