"""telegraf/telegraf.conf: what the bridge reads from it, and that it agrees with the simulator."""

from __future__ import annotations

import re

import pytest

from localflux.telegraf.config import ConfigError, load_config, parse_config
from localflux.telegraf.json_v2 import parse_payload
from machine_simulator.payload import (
    FAULT_TOPIC_PREFIX,
    QOS,
    encode,
    fault_payload,
    fault_topic,
    reading_payload,
    reading_topic,
)
from machine_simulator.signals import FIELDS, Fleet
from tests.support import REPO_ROOT

CONF = REPO_ROOT / "telegraf" / "telegraf.conf"
ENV = {
    "MQTT_BROKER_URL": "tcp://127.0.0.1:1999",
    "INFLUX_HOST": "http://127.0.0.1:8999",
    "INFLUX_TOKEN": "apiv3_secret",
    "INFLUX_DATABASE": "fleet",
}


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (+ one level, # the rest)."""
    regex = "^" + re.escape(pattern).replace(r"\+", "[^/]+").replace(r"/\#", "(/.*)?") + "$"
    return re.match(regex, topic) is not None


def test_the_shipped_config_reads_addresses_from_the_environment() -> None:
    config = load_config(CONF, ENV)
    assert config.input.servers == ("tcp://127.0.0.1:1999",)
    assert config.output.urls == ("http://127.0.0.1:8999",)
    assert config.output.token == "apiv3_secret"
    assert config.output.bucket == "fleet"
    assert config.input.qos == QOS == 1
    assert config.input.persistent_session and config.input.client_id
    assert config.agent.omit_hostname and config.input.topic_tag is None


def test_unset_variables_take_the_documented_defaults() -> None:
    config = load_config(CONF, {})
    assert config.input.servers == ("tcp://127.0.0.1:1883",)
    assert config.output.urls == ("http://127.0.0.1:8181",)
    assert (config.output.bucket, config.output.token) == ("machines", "")
    assert config.notes == ()


def test_config_agrees_with_what_the_simulator_publishes() -> None:
    config = load_config(CONF, ENV)
    [parser] = config.input.json_v2
    fleet = Fleet(3, seed=42)
    reading = fleet.step(1_700_000_000.123)[1]

    # Topics: every reading topic is subscribed, ground truth is not.
    assert any(topic_matches(t, reading_topic(reading.machine_id)) for t in config.input.topics)
    assert not any(topic_matches(t, fault_topic("machine2")) for t in config.input.topics)
    assert not FAULT_TOPIC_PREFIX.startswith("machine/")

    # Tags, fields and timestamp: the configured parser turns a real payload into the row.
    assert parser.measurement_name == "machine_data"
    assert (parser.timestamp_path, parser.timestamp_format) == ("time", "unix_ms")
    assert {ds.name for ds in parser.tags} == {"machineID", "provider"}
    assert [ds.name for ds in parser.fields] == list(FIELDS)
    assert {ds.type for ds in parser.fields} == {"float"}
    [metric] = parse_payload(encode(reading_payload(reading)), config.input.json_v2)
    assert metric.measurement == "machine_data"
    assert metric.tags == {"machineID": "machine2", "provider": reading.provider}
    assert metric.fields == reading.values()
    assert all(isinstance(v, float) for v in metric.fields.values())
    assert metric.time_ns == reading.time_ms * 1_000_000 == 1_700_000_000_123_000_000


def test_a_fault_event_is_not_a_reading() -> None:
    config = load_config(CONF, ENV)
    fleet = Fleet(2)
    fleet.step(1_700_000_000.0)
    event = fleet.set_fault("machine1", "drift", True, at=1_700_000_000.5)
    with pytest.raises(ValueError, match="doesn't exist"):
        parse_payload(encode(fault_payload(event)), config.input.json_v2)


def test_the_bridge_reports_what_it_does_not_implement() -> None:
    text = CONF.read_text() + '\n[[outputs.file]]\n  files = ["stdout"]\n'
    text = text.replace('flush_jitter = "0s"', 'flush_jitter = "0s"\n  precision = "1s"')
    config = parse_config(text, ENV)
    assert "agent.precision" in config.unsupported
    assert "[[outputs.file]]" in config.unsupported
    assert any(
        option.startswith("inputs.mqtt_consumer.max_undelivered_messages (the broker's")
        for option in config.unsupported
    )


def test_upstream_object_config_still_parses_the_payload() -> None:
    # The upstream demo's json_v2 object config, plus "time" kept out of the fields.
    upstream = """
    [[inputs.mqtt_consumer]]
      servers = ["tcp://mosquitto:1883"]
      topics = ["machine/#"]
      data_format = "json_v2"
      [[inputs.mqtt_consumer.json_v2]]
        measurement_name = "machine_data"
        timestamp_path = "time"
        timestamp_format = "unix_ms"
        [[inputs.mqtt_consumer.json_v2.object]]
          path = "@this"
          disable_prepend_keys = true
          tags = ["metadata_machineID", "metadata_provider"]
          excluded_keys = ["metadata_barcode", "time"]
    [[outputs.influxdb_v2]]
      urls = ["http://influxdb:8086"]
    """
    config = parse_config(upstream, {})
    reading = Fleet(1).step(1_700_000_000.0)[0]
    [metric] = parse_payload(encode(reading_payload(reading)), config.input.json_v2)
    assert metric.tags == {"machineID": "machine1", "provider": reading.provider}
    assert metric.fields == reading.values()
    assert config.input.topic_tag == "topic"  # Telegraf's default, unlike ours


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('data_format = "json_v2"', 'data_format = "influx"'), "json_v2 only"),
        (("${MQTT_BROKER_URL:-tcp://127.0.0.1:1883}", "ssl://broker:8883"), "TLS and websockets"),
        (('client_id = "telegraf-machine-data"', 'client_id = ""'), "needs a client_id"),
        (('path = "data.1.load"', 'path = "data.#.load"'), "GJSON path"),
        (('timestamp_format = "unix_ms"', 'timestamp_format = "2006-01-02"'), "timestamp_format"),
        (('type = "float"', 'type = "double"'), "is not one of"),
        (('flush_interval = "1s"', 'flush_interval = "soon"'), "invalid duration"),
        (
            ("[[outputs.influxdb_v2]]", "[[outputs.influxdb]]"),
            "exactly one [[outputs.influxdb_v2]]",
        ),
        (("[agent]", "[agent"), "not valid TOML"),
    ],
)
def test_options_that_would_change_the_data_are_errors(change, message) -> None:
    text = CONF.read_text().replace(*change, 1)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text, ENV)


def test_env_values_cannot_break_the_toml() -> None:
    config = load_config(CONF, {**ENV, "INFLUX_TOKEN": 'has "quotes" and \\ backslash'})
    assert config.output.token == 'has "quotes" and \\ backslash'


def test_the_sample_config_beside_the_bridge_is_read_whole() -> None:
    """localflux/telegraf/sample.conf (the README's smallest config) has nothing unsupported."""
    sample = REPO_ROOT / "localflux" / "telegraf" / "sample.conf"
    config = load_config(sample, {"MQTT_BROKER_URL": "tcp://127.0.0.1:1999"})
    assert (config.unsupported, config.notes) == ((), ())
    assert config.input.servers == ("tcp://127.0.0.1:1999",)
    assert (config.output.urls, config.output.bucket) == (("http://127.0.0.1:8181",), "machines")
