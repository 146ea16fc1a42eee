"""What `make run` starts: one command line, port, readiness probe and URL per service.

Everything comes from the documented settings (`.env.example`), so a test can move every port
and data dir into a temporary directory. The plan is computed before anything starts, which is
what lets the launcher refuse a bad configuration (a port in use, two services on one port, a
remote broker) with a message naming the variable, instead of six processes failing at once.

The launcher owns the wiring between the services, so it sets for all of them:
- `INFLUX_HOST`/`INFLUX_TOKEN` to its own localflux (the bridge writes there, Mage reads there);
- without `SLACK_WEBHOOK_URL`, `SLACK_WEBHOOK_URL` to the local inbox's `/hook` (Mage's own
  failure notices follow it, see influx_magic.mage_server), and `PUBLIC_BASE_URL` to the inbox
  (it serves the plots) unless it was set to something other than its default;
- `FLEET_PAGE_URL` to the fleet status page it starts, which the inbox and the simulator
  pages link to (they know it by this URL only, not by importing it).

>>> plan = build_plan({}, python="py", fresh_database=True)
>>> [s.name for s in plan.services]
['localflux', 'broker', 'bridge', 'inbox', 'simulator', 'mage', 'fleet']
>>> plan.env["SLACK_WEBHOOK_URL"], plan.env["PUBLIC_BASE_URL"], plan.env["INFLUX_HOST"]
('http://127.0.0.1:5006/hook', 'http://127.0.0.1:5006', 'http://127.0.0.1:8181')
>>> print(plan.service("localflux").command)  # doctest: +ELLIPSIS
exec py -m localflux serve --host 127.0.0.1 --port 8181 --data-dir /.../.local/influx
>>> "--backfill 30m" in plan.service("simulator").command
True
>>> "--backfill 0" in build_plan({}, python="py", fresh_database=False).service("simulator").command
True
>>> slack = build_plan({"SLACK_WEBHOOK_URL": "https://hooks.example/x"}, "py", True)
>>> [s.name for s in slack.services if s.name == "inbox"], "SLACK_WEBHOOK_URL" in slack.env
([], False)
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from localsystem.readiness import Probe
from localsystem.settings import DEFAULTS, int_setting, path_setting, setting
from machine_simulator.publisher import parse_broker_url
from magic_common.envsettings import project_root

TELEGRAF_CONF = project_root() / "telegraf" / "telegraf.conf"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
HOST = "127.0.0.1"


class PlanError(ValueError):
    """The configuration cannot run locally; the message names the variable to change."""


@dataclass(frozen=True)
class Service:
    """One supervised process of the local system."""

    name: str
    command: str  # a shell command line: honcho runs it with `sh -c`
    purpose: str  # shown next to the URL
    port: int | None = None  # the port it listens on, checked free before anything starts
    port_variable: str | None = None
    probe: Probe | None = None  # None: being alive is all that can be checked
    url: str | None = None


@dataclass(frozen=True)
class Plan:
    services: list[Service]
    env: dict[str, str]  # set for every process, on top of the launcher's environment
    notes: list[str] = field(default_factory=list)

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)


def has_data(data_dir: Path) -> bool:
    """Whether localflux has stored anything in `data_dir` (beyond its lock file).

    The simulator's backfill gives the detector a full first window; on a data dir that already
    holds telemetry it would only add a second, overlapping history.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> has_data(d / "missing"), has_data(d)
    (False, False)
    >>> _ = (d / "lock").write_text(""); has_data(d)
    False
    >>> _ = (d / "catalog.json").write_text("{}"); has_data(d)
    True
    """
    if not data_dir.is_dir():
        return False
    return any(entry.name != "lock" for entry in data_dir.iterdir())


def _command(*words: str | Path) -> str:
    return "exec " + shlex.join(str(w) for w in words)


def _port(name: str, env: Mapping[str, str]) -> int:
    try:
        port = int_setting(name, env)
    except ValueError as error:
        raise PlanError(str(error)) from None
    if not 0 < port < 65536:
        raise PlanError(f"{name} must be a port number (1-65535), got {port}")
    return port


def _broker_port(env: Mapping[str, str]) -> int:
    url = setting("MQTT_BROKER_URL", env)
    try:
        host, port = parse_broker_url(url)
    except ValueError as error:
        raise PlanError(f"MQTT_BROKER_URL: {error}") from None
    if host not in LOCAL_HOSTS:
        raise PlanError(
            f"MQTT_BROKER_URL is {url!r}, but make run starts its own broker on {HOST}: "
            f"set MQTT_BROKER_URL=tcp://{HOST}:<port> (or unset it for port 1883)"
        )
    return port


def build_plan(env: Mapping[str, str], python: str, fresh_database: bool) -> Plan:
    """The services to start, given the settings in `env`; raises PlanError when it cannot."""
    localflux_port = _port("LOCALFLUX_PORT", env)
    broker_port = _broker_port(env)
    sim_port = _port("SIM_PORT", env)
    mage_port = _port("MAGE_PORT", env)
    fleet_port = _port("FLEET_PAGE_PORT", env)
    fleet_url = f"http://{HOST}:{fleet_port}"
    data_dir = path_setting("LOCALFLUX_DATA_DIR", env)
    backfill = setting("SIM_BACKFILL", env) if fresh_database else "0"
    influx_url = f"http://{HOST}:{localflux_port}"
    overrides = {
        "PYTHONUNBUFFERED": "1",
        "INFLUX_HOST": influx_url,
        "INFLUX_TOKEN": setting("LOCALFLUX_TOKEN", env),
        "FLEET_PAGE_URL": fleet_url + "/",
    }
    notes = []
    user_host = env.get("INFLUX_HOST", "")
    if user_host and user_host.rstrip("/") not in (DEFAULTS["INFLUX_HOST"], influx_url):
        notes.append(
            f"INFLUX_HOST={user_host} is not used by make run: its processes use the local "
            f"localflux at {influx_url} (for a real InfluxDB 3, use docker compose or mage)"
        )
    notes.append(
        f"telemetry in {data_dir}: "
        + (f"new, the simulator backfills {backfill}" if fresh_database else "reused, no backfill")
    )

    services = [
        Service(
            "localflux",
            _command(
                python,
                "-m",
                "localflux",
                "serve",
                "--host",
                HOST,
                "--port",
                str(localflux_port),
                "--data-dir",
                data_dir,
            ),
            "InfluxDB 3 API (HTTP + Flight), database " + setting("INFLUX_DATABASE", env),
            localflux_port,
            "LOCALFLUX_PORT",
            Probe(f"{influx_url}/health"),
            influx_url,
        ),
        Service(
            "broker",
            _command(
                python, "-m", "localflux", "broker", "--host", HOST, "--port", str(broker_port)
            ),
            "MQTT broker",
            broker_port,
            "MQTT_BROKER_URL",
            Probe(f"tcp://{HOST}:{broker_port}"),
            f"mqtt://{HOST}:{broker_port}",
        ),
        Service(
            "bridge",
            _command(python, "-m", "localflux", "bridge", "--config", TELEGRAF_CONF),
            "MQTT -> InfluxDB, as Telegraf with telegraf/telegraf.conf",
        ),
    ]

    if not setting("SLACK_WEBHOOK_URL", env):
        inbox_port = _port("INBOX_PORT", env)
        inbox_url = f"http://{HOST}:{inbox_port}"
        overrides["SLACK_WEBHOOK_URL"] = f"{inbox_url}/hook"
        if setting("PUBLIC_BASE_URL", env) == DEFAULTS["PUBLIC_BASE_URL"]:
            overrides["PUBLIC_BASE_URL"] = inbox_url
        services.append(
            Service(
                "inbox",
                _command(
                    python, "-m", "localflux", "inbox", "--host", HOST, "--port", str(inbox_port)
                ),
                "alerts (the local Slack) with their plots",
                inbox_port,
                "INBOX_PORT",
                Probe(f"{inbox_url}/api/status"),
                inbox_url + "/",
            )
        )
        notes.append(f"alerts go to the local inbox at {inbox_url}/ (SLACK_WEBHOOK_URL is unset)")
    else:
        notes.append("alerts go to SLACK_WEBHOOK_URL (the local inbox is not started)")

    # The simulator waits for the bridge's MQTT session, so the backfill is queued for the
    # bridge even when the simulator connects first (see localsystem.bridge_session).
    session_gate = shlex.join(
        [python, "-m", "localsystem.bridge_session", "--config", str(TELEGRAF_CONF)]
    )
    simulator = _command(
        python,
        "-m",
        "machine_simulator",
        "--host",
        HOST,
        "--port",
        str(sim_port),
        "--broker",
        f"tcp://{HOST}:{broker_port}",
        "--backfill",
        backfill,
    )
    services += [
        Service(
            "simulator",
            f"{session_gate} && {simulator}",
            "the fleet: live values, toggle faults here",
            sim_port,
            "SIM_PORT",
            Probe(f"http://{HOST}:{sim_port}/api/machines"),
            f"http://{HOST}:{sim_port}/",
        ),
        Service(
            "mage",
            _command(
                python, "-m", "influx_magic.mage_server", "--host", HOST, "--port", str(mage_port)
            ),
            "Mage: pipeline machine_anomaly_detection, runs every minute",
            mage_port,
            "MAGE_PORT",
            Probe(f"http://{HOST}:{mage_port}/"),
            f"http://{HOST}:{mage_port}/",
        ),
        Service(
            "fleet",
            _command(
                python, "-m", "influx_magic.fleet_page", "--host", HOST, "--port", str(fleet_port)
            ),
            "fleet status: state, mutes, last hour of scores (influx-magic status)",
            fleet_port,
            "FLEET_PAGE_PORT",
            Probe(f"{fleet_url}/health"),
            fleet_url + "/",
        ),
    ]
    _check_distinct(services)
    return Plan(services, overrides, notes)


def _check_distinct(services: list[Service]) -> None:
    """Two services configured on one port would fail later with an unrelated-looking error.

    >>> a = Service("a", "", "", 5, "A_PORT"); b = Service("b", "", "", 5, "B_PORT")
    >>> _check_distinct([a, b])
    Traceback (most recent call last):
    ...
    localsystem.plan.PlanError: A_PORT and B_PORT are both 5: give each service its own port
    """
    seen: dict[int, Service] = {}
    for service in services:
        if service.port is None:
            continue
        other = seen.setdefault(service.port, service)
        if other is not service:
            raise PlanError(
                f"{other.port_variable} and {service.port_variable} are both {service.port}: "
                "give each service its own port"
            )
