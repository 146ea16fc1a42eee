"""The Docker stack's first start, with the real parts that run here.

No Docker engine runs on the build machines, so the stack's own pieces run as processes with the
compose file's commands: Mosquitto with the shipped mosquitto.conf (listener and data dir moved
to a temporary place), `telegraf-session`'s command, the simulator asking a localflux, the
localflux bridge in Telegraf's place (it reads the same telegraf.conf), and the plots server.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from influxdb_client_3.exceptions import InfluxDB3ClientQueryError

from influx_magic.plots import plot_url
from localflux.telegraf.config import load_config
from tests.compose_file import compose
from tests.support import PYTHON, REPO_ROOT, ManagedProcess, free_port, wait_until

MOSQUITTO_CONF = REPO_ROOT / "mosquitto" / "mosquitto.conf"
TELEGRAF_CONF = REPO_ROOT / "telegraf" / "telegraf.conf"
needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None or shutil.which("mosquitto_sub") is None,
    reason="mosquitto and mosquitto-clients not installed",
)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return compose()["services"]


@dataclass
class Broker:
    """A Mosquitto started with the stack's mosquitto.conf."""

    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


@pytest.fixture
def stack_mosquitto(start_process, port_factory, tmp_path: Path):
    """`make(extra_lines="", drop="")` -> Broker on the shipped config; the same data dir
    for every broker of a test, so a restart finds what the one before saved."""
    data = tmp_path / "mosquitto-data"
    data.mkdir()

    def make(extra_lines: str = "", drop: str = "") -> Broker:
        port = port_factory()
        text = MOSQUITTO_CONF.read_text()
        assert re.search(r"^listener 1883$", text, flags=re.M)
        assert re.search(r"^persistence_location /mosquitto/data/$", text, flags=re.M)
        text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
        text = text.replace(
            "persistence_location /mosquitto/data/", f"persistence_location {data}/"
        )
        if drop:
            assert drop in text
            text = text.replace(drop, "")
        # Started as root, Mosquitto would switch to user mosquitto, who cannot enter pytest's
        # temporary folders; in the image it runs as that user on its own volume.
        text += f"\nuser {getpass.getuser()}\n"
        conf = tmp_path / f"mosquitto-{port}.conf"
        conf.write_text(text + extra_lines)
        process = start_process(f"mosquitto-{port}", ["mosquitto", "-c", str(conf)], port=port)
        return Broker(port, process)

    return make


def session_command(services: dict[str, Any], broker: Broker) -> tuple[list[str], dict[str, str]]:
    """telegraf-session's command and environment, with the host's paths and broker."""
    command = services["telegraf-session"]["command"]
    config_in_container = command[command.index("--config") + 1]
    assert (
        f"./telegraf/telegraf.conf:{config_in_container}:ro"
        in (services["telegraf-session"]["volumes"])
    )
    local = [PYTHON if part == "python" else part for part in command]
    local[local.index("--config") + 1] = str(TELEGRAF_CONF)
    return local, {"MQTT_BROKER_URL": broker.url}


def run_session(services: dict[str, Any], broker: Broker) -> subprocess.CompletedProcess:
    command, env = session_command(services, broker)
    return subprocess.run(
        command, cwd=REPO_ROOT, env={**_base_env(), **env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def _base_env() -> dict[str, str]:
    """This environment without the MQTT and InfluxDB addresses a `.env` may hold."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "INFLUX_"))}


def healthcheck(services: dict[str, Any], name: str, port: int, inner_port: int) -> list[str]:
    """A service's healthcheck command with the host's python and port."""
    test = services[name]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [
        PYTHON if part == "python" else part.replace(str(inner_port), str(port))
        for part in test[1:]
    ]


# --- Mosquitto with the shipped config ------------------------------------------------------


@needs_mosquitto
def test_mosquitto_healthcheck_passes_only_while_the_broker_answers(
    services: dict[str, Any], stack_mosquitto
) -> None:
    broker = stack_mosquitto()
    command = healthcheck(services, "mosquitto", broker.port, 1883)

    assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    broker.process.stop()
    assert wait_until(
        lambda: subprocess.run(command, capture_output=True, timeout=30).returncode != 0, 10
    )


@needs_mosquitto
def test_mosquitto_does_not_log_every_healthcheck_connection(
    services: dict[str, Any], stack_mosquitto
) -> None:
    for drop, logged in (("", False), ("connection_messages false", True)):
        broker = stack_mosquitto(drop=drop)
        command = healthcheck(services, "mosquitto", broker.port, 1883)
        for _ in range(3):
            assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
        broker.process.stop()  # its stdout is buffered: read the log once it has exited
        log = broker.process.log()
        assert "Error" not in log, log
        # The control run (the line dropped) shows what the shipped config keeps out.
        assert bool(re.search(r"New connection from|New client connected", log)) is logged, log


# --- the first start: telegraf-session, then Telegraf, then the simulator ----------------------


@needs_mosquitto
def test_telegraf_session_holds_the_first_backfill_for_telegraf_across_a_broker_restart(
    services: dict[str, Any],
    stack_mosquitto,
    localflux_server,
    start_process,
    port_factory,
    bridge_factory,
    tmp_path: Path,
) -> None:
    """The first start, with Telegraf as late as it can be: the session is opened, the simulator
    asks the (empty) database, publishes its backfill and live readings, the broker restarts
    (its persistence keeps the session and its queue), and only then does Telegraf (here the
    localflux bridge, same telegraf.conf) connect. Every reading reaches machine_data."""
    broker = stack_mosquitto()
    done = run_session(services, broker)
    assert done.returncode == 0, done.stderr
    assert "session 'telegraf-machine-data' open" in done.stderr

    backfill, live, machines = 20, 2, 3
    port = port_factory()
    simulator = start_process(
        f"simulator-{port}",
        [
            PYTHON,
            "-m",
            "machine_simulator",
            "--broker",
            broker.url,
            "--port",
            str(port),
            "--interval",
            "1",
            "--backfill",
            f"{backfill}s",
            "--count",
            str(live),
            "--influx-host",
            localflux_server.url,
            "--influx-database",
            localflux_server.database,
        ],  # fmt: skip
        env={"INFLUX_TOKEN": localflux_server.token or ""},
        url=f"http://127.0.0.1:{port}/api/stats",
    )
    total = (backfill + live) * machines

    def acked() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats", timeout=5) as r:
            return json.loads(r.read())["publisher"]["acked"]

    assert wait_until(lambda: acked() >= total, 60), simulator.log()[-2000:]
    simulator.stop()

    broker.process.stop(signal.SIGTERM)  # Mosquitto saves sessions and queues on exit
    broker = stack_mosquitto()  # same data dir: restores the session and its queue
    assert (tmp_path / "mosquitto-data" / "mosquitto.db").is_file()
    bridge = bridge_factory(broker.url, localflux_server.url, localflux_server.database)

    def rows() -> int:
        with localflux_server.client() as client:
            try:
                table = client.query('SELECT count(*) AS n FROM "machine_data"')
            except InfluxDB3ClientQueryError:  # nothing written yet: no database
                return 0
            return int(table.column("n")[0].as_py())

    assert wait_until(lambda: rows() == total, 60), (rows(), total, bridge.log()[-2000:])


@needs_mosquitto
def test_telegraf_session_fails_when_the_broker_grants_less_than_qos_1(
    services: dict[str, Any], stack_mosquitto
) -> None:
    """QoS 0 readings are not queued for an absent client: the session would hold nothing."""
    broker = stack_mosquitto(extra_lines="\nmax_qos 0\n")
    done = run_session(services, broker)
    assert done.returncode == 1
    assert "refused the subscription: granted [0]" in done.stderr


def test_telegraf_session_uses_telegrafs_client_id_topics_and_qos() -> None:
    """What makes the broker queue for Telegraf: the same client id, a persistent session and
    the topics at QoS 1, all read from the one telegraf.conf both services mount."""
    mqtt_input = load_config(TELEGRAF_CONF, {"MQTT_BROKER_URL": "tcp://mosquitto:1883"}).input
    assert mqtt_input.persistent_session and mqtt_input.client_id
    assert mqtt_input.qos == 1 and mqtt_input.topics == ("machine/+",)


# --- the plots server --------------------------------------------------------------------------


def test_plots_service_serves_the_links_alerts_carry(
    services: dict[str, Any], start_process, tmp_path
) -> None:
    plots = services["plots"]
    mount = plots["volumes"][0].split(":")[1]  # where the plots volume appears
    site = tmp_path / "site"
    served = plots["command"][plots["command"].index("--directory") + 1]
    local_plots = site / Path(mount).relative_to(served)
    local_plots.mkdir(parents=True)
    png = local_plots / "acme-inc-machine2.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")

    port = free_port()
    command = [PYTHON if part == "python" else part for part in plots["command"]]
    command[command.index("8000")] = str(port)
    command[command.index("0.0.0.0")] = "127.0.0.1"
    command[command.index(served)] = str(site)
    start_process("plots", command, port=port)

    # The link the pipeline puts in an alert, with the stack's PUBLIC_BASE_URL on this port.
    base = services["mage"]["environment"]["PUBLIC_BASE_URL"].replace("5006", str(port))
    link = plot_url(png, local_plots, base)
    with urllib.request.urlopen(link, timeout=10) as response:
        assert response.read() == png.read_bytes()
    check = healthcheck(services, "plots", port, 8000)
    assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
    missing = link.replace("acme-inc-machine2", "nothing-here")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(missing, timeout=10)
