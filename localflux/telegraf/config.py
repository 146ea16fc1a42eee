"""Read the subset of a Telegraf config that `localflux bridge` implements, and say what it skips.

One `telegraf/telegraf.conf` serves the Docker stack (real Telegraf) and local runs (the
bridge), so the bridge must read the same options and mean the same thing by them. Options it
does not implement are collected in `BridgeConfig.unsupported` (the bridge logs them at start)
and options that would change what is written without it noticing (another data format, TLS)
raise `ConfigError`.

`${NAME}` and `${NAME:-default}` are replaced in string values after TOML parsing (so a value
can never break the TOML syntax), as Telegraf does; an unset name without a default becomes ""
with a note. `telegraf/telegraf.conf` gives every variable its default in the file itself.

>>> parse_duration("1m30s"), parse_duration("250ms"), parse_duration(5)
(90.0, 0.25, 5.0)
>>> substitute("${INFLUX_HOST}/x ${NOPE:-fallback}", {"INFLUX_HOST": "http://h:1"}, [])
'http://h:1/x fallback'
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magic_common.envsettings import load_dotenv

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# Agent options that only concern polled inputs or Telegraf's own logging: no effect on an
# MQTT consumer, so they are accepted without a note.
_AGENT_NO_EFFECT = {
    "interval",
    "round_interval",
    "collection_jitter",
    "collection_offset",
    "debug",
    "quiet",
    "logfile",
    "logtarget",
    "logformat",
    "log_with_timezone",
}
_AGENT = {"flush_interval", "flush_jitter", "metric_batch_size", "metric_buffer_limit"}
_AGENT |= {"omit_hostname", "hostname"}
_MQTT = {"servers", "topics", "topic_tag", "qos", "persistent_session", "client_id"}
_MQTT |= {"data_format", "username", "password", "keepalive", "json_v2"}
_JSON_V2 = {"measurement_name", "timestamp_path", "timestamp_format", "tag", "field", "object"}
_DATASET = {"path", "type", "rename", "optional"}
_OBJECT = {"path", "optional", "tags", "fields", "renames", "included_keys", "excluded_keys"}
_OBJECT |= {"disable_prepend_keys"}
_OUTPUT = {"urls", "token", "organization", "bucket", "timeout", "content_encoding"}
_OUTPUT |= {"http_headers", "user_agent"}
TIMESTAMP_FORMATS = ("unix", "unix_ms", "unix_us", "unix_ns")
# Options the shipped config sets for Telegraf that the bridge covers another way.
_WHY_UNSUPPORTED = {
    "inputs.mqtt_consumer.max_undelivered_messages": (
        "the broker's in-flight limit bounds unacknowledged messages instead"
    ),
}
FIELD_TYPES = ("", "float", "int", "uint", "bool", "string")


class ConfigError(ValueError):
    """The config cannot be run faithfully by the bridge; the message says which option."""


@dataclass(frozen=True)
class DataSet:
    """A `[[...json_v2.tag]]` or `[[...json_v2.field]]`: one GJSON path to one value."""

    path: str
    type: str = ""
    rename: str = ""
    optional: bool = False

    @property
    def name(self) -> str:
        """Telegraf's default name is the last path element, spaces as underscores."""
        return (self.rename or self.path.split(".")[-1]).replace(" ", "_")


@dataclass(frozen=True)
class JsonObject:
    """A `[[...json_v2.object]]`: every key under `path` becomes a field, or a tag if listed."""

    path: str
    optional: bool = False
    tags: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)
    renames: Mapping[str, str] = field(default_factory=dict)
    included_keys: tuple[str, ...] = ()
    excluded_keys: tuple[str, ...] = ()
    disable_prepend_keys: bool = False


@dataclass(frozen=True)
class JsonV2:
    measurement_name: str
    timestamp_path: str = ""
    timestamp_format: str = ""
    tags: tuple[DataSet, ...] = ()
    fields: tuple[DataSet, ...] = ()
    objects: tuple[JsonObject, ...] = ()


@dataclass(frozen=True)
class MqttInput:
    servers: tuple[str, ...]
    topics: tuple[str, ...]
    qos: int = 0
    topic_tag: str | None = "topic"
    persistent_session: bool = False
    client_id: str = ""
    username: str = ""
    password: str = ""
    keepalive: int = 60
    json_v2: tuple[JsonV2, ...] = ()


@dataclass(frozen=True)
class InfluxOutput:
    urls: tuple[str, ...]
    token: str = ""
    organization: str = ""
    bucket: str = ""
    timeout: float = 5.0
    content_encoding: str = "gzip"
    http_headers: Mapping[str, str] = field(default_factory=dict)
    user_agent: str = "localflux-bridge"


@dataclass(frozen=True)
class Agent:
    flush_interval: float = 10.0
    flush_jitter: float = 0.0
    metric_batch_size: int = 1000
    metric_buffer_limit: int = 10000
    omit_hostname: bool = False
    hostname: str = ""


@dataclass(frozen=True)
class BridgeConfig:
    agent: Agent
    input: MqttInput
    output: InfluxOutput
    unsupported: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def parse_duration(value: object) -> float:
    """A Telegraf duration ("10s", "1m30s", "500ms") or a number of seconds, in seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise ConfigError(f"invalid duration {value!r} (use e.g. 10s, 500ms, 1m30s)")


def substitute(text: str, env: Mapping[str, str], notes: list[str]) -> str:
    """Replace `${NAME}` / `${NAME:-default}` in one string."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name, "")
        if value:
            return value
        if default is not None:
            return default
        notes.append(f"${{{name}}} is not set; using an empty string (as Telegraf does)")
        return ""

    return _ENV.sub(replace, text)


def _substitute_all(value: Any, env: Mapping[str, str], notes: list[str]) -> Any:
    if isinstance(value, str):
        return substitute(value, env, notes)
    if isinstance(value, list):
        return [_substitute_all(v, env, notes) for v in value]
    if isinstance(value, dict):
        return {k: _substitute_all(v, env, notes) for k, v in value.items()}
    return value


class _Reader:
    """Typed access to one TOML table that records every key it was not asked about."""

    def __init__(self, table: Mapping[str, Any], where: str, unsupported: list[str]) -> None:
        self.table = table
        self.where = where
        self.unsupported = unsupported

    def check_keys(self, supported: set[str], no_effect: set[str] = frozenset()) -> None:
        for key in self.table:
            if key not in supported and key not in no_effect:
                name = f"{self.where}.{key}"
                why = _WHY_UNSUPPORTED.get(name)
                self.unsupported.append(f"{name} ({why})" if why else name)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.table.get(key, default)
        if value is not default and not isinstance(value, kind):
            raise ConfigError(f"{self.where}.{key} has the wrong type: {value!r}")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where}.{key} must be a list of strings")
        return tuple(value)

    def str_map(self, key: str) -> dict[str, str]:
        value = self.get(key, dict, {})
        if not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{self.where}.{key} must map names to strings")
        return dict(value)

    def tables(self, key: str) -> list[Mapping[str, Any]]:
        value = self.get(key, list, [])
        if not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{self.where}.{key} must be an array of tables ([[{key}]])")
        return value


_GJSON_SPECIAL = set('*?#|@()[]{},!=<>%"')


def check_path(path: str, where: str) -> str:
    """Only plain GJSON paths (keys and array indices, `\\.` escapes, or `@this`) are supported."""
    if path == "@this":
        return path
    unescaped = path.replace("\\.", "")
    if not path or any(ch in _GJSON_SPECIAL for ch in unescaped) or ".." in unescaped:
        raise ConfigError(
            f"{where}: GJSON path {path!r} is not supported by the bridge "
            "(only keys and array indices like metadata.machineID or data.0.load)"
        )
    return path


def _dataset(table: Mapping[str, Any], where: str, unsupported: list[str]) -> DataSet:
    reader = _Reader(table, where, unsupported)
    reader.check_keys(_DATASET)
    path = reader.get("path", str, "")
    if not path:
        raise ConfigError(f"{where}.path is required")
    kind = reader.get("type", str, "")
    if kind not in FIELD_TYPES:
        raise ConfigError(f"{where}.type {kind!r} is not one of {', '.join(FIELD_TYPES[1:])}")
    return DataSet(
        path=check_path(path, where),
        type=kind,
        rename=reader.get("rename", str, ""),
        optional=reader.get("optional", bool, False),
    )


def _object(table: Mapping[str, Any], where: str, unsupported: list[str]) -> JsonObject:
    reader = _Reader(table, where, unsupported)
    reader.check_keys(_OBJECT)
    path = reader.get("path", str, "")
    if not path:
        raise ConfigError(f"{where}.path is required")
    fields = reader.str_map("fields")
    for name, kind in fields.items():
        if kind not in FIELD_TYPES:
            raise ConfigError(f"{where}.fields.{name}: type {kind!r} is not supported")
    return JsonObject(
        path=check_path(path, where),
        optional=reader.get("optional", bool, False),
        tags=reader.str_list("tags"),
        fields=fields,
        renames=reader.str_map("renames"),
        included_keys=reader.str_list("included_keys"),
        excluded_keys=reader.str_list("excluded_keys"),
        disable_prepend_keys=reader.get("disable_prepend_keys", bool, False),
    )


def _json_v2(table: Mapping[str, Any], where: str, unsupported: list[str]) -> JsonV2:
    reader = _Reader(table, where, unsupported)
    reader.check_keys(_JSON_V2)
    timestamp_path = reader.get("timestamp_path", str, "")
    timestamp_format = reader.get("timestamp_format", str, "")
    if timestamp_path:
        check_path(timestamp_path, f"{where}.timestamp_path")
        if timestamp_format not in TIMESTAMP_FORMATS:
            raise ConfigError(
                f"{where}.timestamp_format {timestamp_format!r} is not supported by the bridge "
                f"(one of {', '.join(TIMESTAMP_FORMATS)})"
            )
    return JsonV2(
        measurement_name=reader.get("measurement_name", str, "") or "mqtt_consumer",
        timestamp_path=timestamp_path,
        timestamp_format=timestamp_format,
        tags=tuple(_dataset(t, f"{where}.tag", unsupported) for t in reader.tables("tag")),
        fields=tuple(_dataset(t, f"{where}.field", unsupported) for t in reader.tables("field")),
        objects=tuple(_object(t, f"{where}.object", unsupported) for t in reader.tables("object")),
    )


def _mqtt_input(table: Mapping[str, Any], unsupported: list[str]) -> MqttInput:
    where = "inputs.mqtt_consumer"
    reader = _Reader(table, where, unsupported)
    reader.check_keys(_MQTT)
    data_format = reader.get("data_format", str, "influx")
    if data_format != "json_v2":
        raise ConfigError(f"{where}.data_format {data_format!r}: the bridge parses json_v2 only")
    servers = reader.str_list("servers")
    if not servers:
        raise ConfigError(f"{where}.servers is empty")
    for server in servers:
        if not re.match(r"^(tcp|mqtt)://[^/]+$", server):
            raise ConfigError(
                f"{where}.servers: {server!r} is not tcp://host:port (TLS and "
                "websockets are not supported by the bridge)"
            )
    topics = reader.str_list("topics")
    if not topics:
        raise ConfigError(f"{where}.topics is empty")
    qos = reader.get("qos", int, 0)
    if qos not in (0, 1, 2):
        raise ConfigError(f"{where}.qos must be 0, 1 or 2")
    persistent = reader.get("persistent_session", bool, False)
    client_id = reader.get("client_id", str, "")
    if persistent and not client_id:
        raise ConfigError(f"{where}.persistent_session needs a client_id (as in Telegraf)")
    parsers = tuple(_json_v2(t, f"{where}.json_v2", unsupported) for t in reader.tables("json_v2"))
    if not parsers:
        raise ConfigError(f"{where}: data_format json_v2 needs a [[{where}.json_v2]] table")
    return MqttInput(
        servers=servers,
        topics=topics,
        qos=qos,
        topic_tag=reader.get("topic_tag", str, "topic") or None,
        persistent_session=persistent,
        client_id=client_id,
        username=reader.get("username", str, ""),
        password=reader.get("password", str, ""),
        keepalive=reader.get("keepalive", int, 60),
        json_v2=parsers,
    )


def _output(table: Mapping[str, Any], unsupported: list[str]) -> InfluxOutput:
    where = "outputs.influxdb_v2"
    reader = _Reader(table, where, unsupported)
    reader.check_keys(_OUTPUT)
    urls = reader.str_list("urls") or ("http://localhost:8086",)
    encoding = reader.get("content_encoding", str, "gzip")
    if encoding not in ("gzip", "identity"):
        raise ConfigError(f"{where}.content_encoding must be gzip or identity")
    return InfluxOutput(
        urls=urls,
        token=reader.get("token", str, ""),
        organization=reader.get("organization", str, ""),
        bucket=reader.get("bucket", str, ""),
        timeout=parse_duration(reader.get("timeout", (str, int), "5s")),
        content_encoding=encoding,
        http_headers=reader.str_map("http_headers"),
        user_agent=reader.get("user_agent", str, "localflux-bridge"),
    )


def _agent(table: Mapping[str, Any], unsupported: list[str]) -> Agent:
    reader = _Reader(table, "agent", unsupported)
    reader.check_keys(_AGENT, _AGENT_NO_EFFECT)
    return Agent(
        flush_interval=parse_duration(reader.get("flush_interval", (str, int), "10s")),
        flush_jitter=parse_duration(reader.get("flush_jitter", (str, int), "0s")),
        metric_batch_size=reader.get("metric_batch_size", int, 1000),
        metric_buffer_limit=reader.get("metric_buffer_limit", int, 10000),
        omit_hostname=reader.get("omit_hostname", bool, False),
        hostname=reader.get("hostname", str, ""),
    )


def _plugins(config: Mapping[str, Any], section: str) -> dict[str, list[Mapping[str, Any]]]:
    value = config.get(section, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{section}] must hold plugin tables")
    return value


def parse_config(text: str, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Parse a telegraf.conf text; `env` defaults to the process environment."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    notes: list[str] = []
    if env is None:
        load_dotenv()
        env = os.environ
    config = _substitute_all(raw, env, notes)
    unsupported: list[str] = []
    for key in config:
        if key not in ("agent", "inputs", "outputs", "global_tags"):
            unsupported.append(f"[{key}]")
    if config.get("global_tags"):
        unsupported.append("[global_tags]")
    inputs = _plugins(config, "inputs")
    outputs = _plugins(config, "outputs")
    for section, plugins, wanted in (
        ("inputs", inputs, "mqtt_consumer"),
        ("outputs", outputs, "influxdb_v2"),
    ):
        for name in plugins:
            if name != wanted:
                unsupported.append(f"[[{section}.{name}]]")
        if len(plugins.get(wanted, [])) != 1:
            raise ConfigError(f"the bridge needs exactly one [[{section}.{wanted}]]")
    output = _output(outputs["influxdb_v2"][0], unsupported)
    if len(output.urls) > 1:
        unsupported.append("outputs.influxdb_v2.urls beyond the first")
    return BridgeConfig(
        agent=_agent(config.get("agent", {}), unsupported),
        input=_mqtt_input(inputs["mqtt_consumer"][0], unsupported),
        output=output,
        unsupported=tuple(unsupported),
        notes=tuple(dict.fromkeys(notes)),
    )


def load_config(path: Path, env: Mapping[str, str] | None = None) -> BridgeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return parse_config(text, env)
