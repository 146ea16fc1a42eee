"""`make run` as a user runs it: the whole local system, a fault toggled in a browser, Ctrl-C.

Every port and data dir (and HOME) is moved into temporary dirs through the documented
settings, so the test touches nothing of a developer's own `make run`. `make run` runs in a
process group of its own, as in a terminal, and "Ctrl-C" is SIGINT to that group. Every
process the system starts inherits a marker variable, which is how the test finds anything
left behind, whatever session or process group it moved to.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from influx_magic import local_wiring
from tests.fixtures.mqtt import MqttBroker, publish_all
from tests.support import PYTHON, REPO_ROOT, port_open, wait_until

MAKE_RUN = ["make", "--no-print-directory", "run"]
MARKER = "INFLUX_MAGIC_TEST_RUN"
READY_LINE = "influx-magic is running"
STOPPED_LINE = "make run: stopped everything"
# Generous: Mage alone needs 10-30 s on two busy cores (migrations on a fresh database).
READY_TIMEOUT = 240.0
# Five minutes of 1 s readings: more than the detector's first window (250 points), so
# machine2's fault is scored against a full window from the first scheduled run.
BACKFILL = "5m"
BACKFILL_READINGS = 300
MACHINES = ("machine1", "machine2", "machine3")


@dataclass
class LocalSystem:
    """One `make run`: its process group, its log, and the ports it was given."""

    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None
    started_at: float = 0.0

    def port(self, name: str) -> int:
        if name == "MQTT_BROKER_URL":
            return urllib.parse.urlsplit(self.env[name]).port or 0
        return int(self.env[name])

    @property
    def ports(self) -> dict[str, int]:
        names = (
            "LOCALFLUX_PORT",
            "MQTT_BROKER_URL",
            "SIM_PORT",
            "INBOX_PORT",
            "MAGE_PORT",
            "FLEET_PAGE_PORT",
        )
        return {name: self.port(name) for name in names}

    def url(self, variable: str, path: str) -> str:
        return f"http://127.0.0.1:{self.port(variable)}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        self.started_at = time.time()
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                MAKE_RUN,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        assert self.popen is not None
        ready = wait_until(
            lambda: READY_LINE in self.log() or self.popen.poll() is not None,
            READY_TIMEOUT,
            interval=0.5,
        )
        if not ready or READY_LINE not in self.log():
            pytest.fail(
                f"make run did not report ready within {READY_TIMEOUT:g}s "
                f"(exit code {self.popen.poll()}). Log:\n{self.log()[-8000:]}"
            )

    def interrupt(self) -> int | None:
        """Ctrl-C: SIGINT to the whole foreground group; make's exit code (None: still up)."""
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=30)
        return self.popen.poll()

    def leftovers(self) -> list[str]:
        """Processes that carry this run's marker (anything the system started, still alive)."""
        wanted = f"{MARKER}={self.env[MARKER]}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                        found.append(f"{entry.name}: {cmdline.decode(errors='replace')[:200]}")
        return found

    def listening(self) -> dict[str, int]:
        return {name: port for name, port in self.ports.items() if port_open(port)}

    def kill_everything(self) -> None:
        """Teardown after a failure: nothing may outlive the test, whatever went wrong."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        for line in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, url
        return json.loads(response.read())


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def reading_times(system: LocalSystem) -> list[float]:
    """Epoch seconds of every machine_data row in the system's localflux."""
    query = urllib.parse.urlencode(
        {"db": "machines", "q": "SELECT time FROM machine_data", "format": "json"}
    )
    rows = get_json(system.url("LOCALFLUX_PORT", f"/api/v3/query_sql?{query}"))
    return [datetime.fromisoformat(row["time"]).timestamp() for row in rows]


def completed_run_after(system: LocalSystem, moment: datetime) -> bool:
    """Whether a scheduled pipeline run due after `moment` has completed (Mage's times: UTC)."""
    query = urllib.parse.urlencode({"pipeline_uuid": "machine_anomaly_detection", "_limit": 10})
    runs = get_json(system.url("MAGE_PORT", f"/api/pipeline_runs?{query}"))["pipeline_runs"]
    return any(
        run["status"] == "completed"
        and datetime.fromisoformat(run["execution_date"]).replace(tzinfo=UTC) > moment
        for run in runs
    )


@pytest.fixture
def system_factory(
    tmp_path: Path, port_factory: Callable[[], int]
) -> Iterator[Callable[[], LocalSystem]]:
    """`make run` configurations sharing one set of temp dirs and ports (so data is reused)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(
        {
            MARKER: uuid.uuid4().hex,
            "HOME": str(tmp_path / "home"),
            "LOCALFLUX_PORT": str(port_factory()),
            "LOCALFLUX_DATA_DIR": str(tmp_path / "influx"),
            "LOCALFLUX_TOKEN": "",
            "INFLUX_HOST": "",
            "INFLUX_TOKEN": "",
            "INFLUX_DATABASE": "machines",
            "MQTT_BROKER_URL": f"tcp://127.0.0.1:{port_factory()}",
            "SIM_PORT": str(port_factory()),
            "SIM_MACHINES": str(len(MACHINES)),
            "SIM_INTERVAL": "1.0",
            "SIM_SEED": "42",
            "SIM_BACKFILL": BACKFILL,
            # Empty counts as unset and, being set, keeps a developer's .env out of the test.
            "SLACK_WEBHOOK_URL": "",
            "MAGE_SLACK_WEBHOOK_URL": "",
            "PUBLIC_BASE_URL": "",
            "MAGE_API_TRIGGER_TOKEN": "",
            "INBOX_PORT": str(port_factory()),
            "INBOX_DATA_DIR": str(tmp_path / "inbox"),
            "MAGE_PORT": str(port_factory()),
            "MAGE_DATA_DIR": str(tmp_path / "mage"),
            "FLEET_PAGE_PORT": str(port_factory()),
            "FLEETWATCH_STATE_DIR": str(tmp_path / "state"),
            "FLEETWATCH_OUTPUT_DIR": str(tmp_path / "plots"),
            "MAKE_RUN_WIRING_FILE": str(tmp_path / "make-run.env"),
        }
    )
    (tmp_path / "home").mkdir()
    systems: list[LocalSystem] = []

    def make() -> LocalSystem:
        system = LocalSystem(env, tmp_path / f"make-run-{len(systems) + 1}.log")
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.kill_everything()


def test_a_port_in_use_names_the_service_and_the_variable_and_nothing_starts(
    system_factory: Callable[[], LocalSystem],
) -> None:
    system = system_factory()
    inbox_port = system.port("INBOX_PORT")
    with socket.create_server(("127.0.0.1", inbox_port)):
        done = subprocess.run(
            [PYTHON, "-m", "localsystem"],
            cwd=REPO_ROOT,
            env=system.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done
    assert done.stderr.splitlines() == [
        f"make run: port {inbox_port} (inbox) is in use: set INBOX_PORT in .env or the environment",
        "make run: nothing was started",
    ]
    assert system.leftovers() == []
    assert not Path(system.env["LOCALFLUX_DATA_DIR"]).exists()


def test_a_remote_broker_url_is_refused_with_the_variable_to_change(
    system_factory: Callable[[], LocalSystem],
) -> None:
    env = {**system_factory().env, "MQTT_BROKER_URL": "tcp://broker.example:1883"}
    done = subprocess.run(
        [PYTHON, "-m", "localsystem"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "MQTT_BROKER_URL is 'tcp://broker.example:1883'" in done.stderr
    assert "set MQTT_BROKER_URL=tcp://127.0.0.1:<port>" in done.stderr


def test_the_bridge_session_keeps_what_is_published_before_the_bridge_connects(
    mqtt_broker: MqttBroker,
) -> None:
    """The simulator's backfill goes out before the bridge may have subscribed."""
    env = {**os.environ, "MQTT_BROKER_URL": mqtt_broker.url}
    config = REPO_ROOT / "telegraf" / "telegraf.conf"
    gate = [PYTHON, "-m", "localsystem.bridge_session", "--config", str(config)]
    assert subprocess.run(gate, env=env, timeout=60).returncode == 0
    sent = [f"reading {i}".encode() for i in range(20)]
    publish_all(mqtt_broker, "machine/machine1", sent)

    received: list[bytes] = []
    bridge = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="telegraf-machine-data", clean_session=False
    )
    bridge.on_message = lambda _c, _u, message: received.append(message.payload)
    bridge.connect("127.0.0.1", mqtt_broker.port)
    bridge.loop_start()
    try:
        assert wait_until(lambda: len(received) >= len(sent), 10)
    finally:
        bridge.disconnect()
        bridge.loop_stop()
    assert received == sent


ORPHAN_SCRIPT = """
import subprocess, sys, time
from localsystem.orphans import become_subreaper, children, stop_orphans
assert become_subreaper()
# A component that starts a child in a session of its own and is then killed.
component = subprocess.Popen(["sh", "-c", "setsid sleep 300 & echo $!"], stdout=subprocess.PIPE)
orphan = int(component.stdout.readline())
component.wait()
time.sleep(0.2)
assert children() == [orphan], (children(), orphan)
assert stop_orphans(set(), grace=2) == [orphan]
assert children() == []
print("ok")
"""


def test_a_component_orphan_is_adopted_and_stopped() -> None:
    done = subprocess.run(
        [PYTHON, "-c", ORPHAN_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout == "ok\n", done.stderr


def stop_and_check_nothing_is_left(system: LocalSystem) -> None:
    make_exit = system.interrupt()
    log = system.log()
    assert make_exit is not None, f"make run still running 30 s after Ctrl-C:\n{log[-5000:]}"
    # make itself reports the interrupt (and dies of SIGINT); the launcher's own verdict is
    # its last line: everything stopped because it was asked to, not because something failed.
    assert STOPPED_LINE + "\n" in log, log[-5000:]
    assert "stopped everything because" not in log, log[-5000:]
    assert wait_until(lambda: not system.leftovers(), 5), system.leftovers()
    assert system.listening() == {}


@pytest.mark.slow
def test_make_run_starts_everything_ctrl_c_stops_it_and_a_second_run_reuses_the_data(
    system_factory: Callable[[], LocalSystem],
) -> None:
    first = system_factory()
    first.start()
    first.wait_ready()
    assert f"new, the simulator backfills {BACKFILL}" in first.log()

    assert http_status(first.url("LOCALFLUX_PORT", "/health")) == 200
    assert port_open(first.port("MQTT_BROKER_URL"))
    machines = get_json(first.url("SIM_PORT", "/api/machines"))
    assert [m["id"] for m in machines] == list(MACHINES)
    assert get_json(first.url("INBOX_PORT", "/api/status"))["count"] == 0
    assert http_status(first.url("MAGE_PORT", "/")) == 200
    for variable in ("SIM_PORT", "MAGE_PORT", "INBOX_PORT", "FLEET_PAGE_PORT"):
        assert first.url(variable, "/") in first.log()
    assert http_status(first.url("FLEET_PAGE_PORT", "/api/status")) == 200
    # A `mage run` typed in another shell finds the inbox and the localflux this run wired.
    wired = local_wiring.recorded(Path(first.env["MAKE_RUN_WIRING_FILE"]))
    assert wired["SLACK_WEBHOOK_URL"] == first.url("INBOX_PORT", "/hook")
    assert wired["INFLUX_HOST"] == first.url("LOCALFLUX_PORT", "")
    assert "alembic" not in first.log()  # Mage's start-up noise stays out

    # The backfill reaches localflux through the broker and the bridge: none of it is lost
    # to the race between the simulator's first publish and the bridge's subscription.
    expected = BACKFILL_READINGS * len(MACHINES)
    assert wait_until(lambda: len(reading_times(first)) >= expected, 60, interval=1.0), (
        f"{len(reading_times(first))} rows, expected at least {expected}"
    )
    earliest = min(reading_times(first))
    assert first.started_at - BACKFILL_READINGS - 1 < earliest < first.started_at - 240

    stop_and_check_nothing_is_left(first)
    assert not Path(first.env["MAKE_RUN_WIRING_FILE"]).exists()
    stopped_at = time.time()
    time.sleep(3)

    second = system_factory()
    second.start()
    second.wait_ready()
    assert "reused, no backfill" in second.log()
    times = reading_times(second)
    assert min(times) == earliest
    # Without a backfill nothing is stamped between the first run's stop and the second's
    # start; a backfill would have filled that gap.
    in_gap = [t for t in times if stopped_at + 1 < t < second.started_at]
    assert in_gap == []
    stop_and_check_nothing_is_left(second)


@pytest.mark.slow
@pytest.mark.browser
def test_a_fault_toggled_in_the_browser_alerts_once_for_that_machine(
    system_factory: Callable[[], LocalSystem], chromium
) -> None:
    from playwright.sync_api import expect

    system = system_factory()
    system.start()
    system.wait_ready()

    page = chromium.new_page()
    page.goto(system.url("SIM_PORT", "/"))
    card = page.locator('[data-machine="machine2"]')
    expect(card.locator('[data-field="load"] b')).not_to_have_text("–")
    expect(page.locator("#fleet-link")).to_have_attribute(
        "href", system.url("FLEET_PAGE_PORT", "/")
    )
    card.locator("[data-role=kind]").select_option("overload")
    card.locator("[data-role=toggle]").click()
    expect(card).to_have_attribute("data-fault-active", "true")
    toggled_at = time.time()
    page.close()

    def alerts() -> list[dict]:
        return get_json(system.url("INBOX_PORT", "/api/messages"))

    def mentions(message: dict, machine: str) -> bool:
        return machine in message["text"]

    def from_check(message: dict) -> bool:
        return "check overload (limit)" in message["text"]

    def both_alerted_and_a_later_run_completed() -> bool:
        """The detector's alert and the shipped checks.yaml's `overload` limit (load above 150
        for 30 s) both fire; exactly once needs a run after the later one that repeated neither."""
        mine = [m for m in alerts() if mentions(m, "machine2")]
        if not any(from_check(m) for m in mine) or all(from_check(m) for m in mine):
            return False
        last = max(datetime.fromisoformat(m["received_at"]) for m in mine)
        return completed_run_after(system, last)

    wait_until(both_alerted_and_a_later_run_completed, 180 - (time.time() - toggled_at), interval=2)
    messages = alerts()
    assert any(mentions(m, "machine2") for m in messages), (
        f"no alert for machine2 within 180 s of the toggle\n{system.log()[-8000:]}"
    )
    detector = [m for m in messages if not from_check(m)]
    check = [m for m in messages if from_check(m)]
    assert len(detector) == 1 and len(check) == 1, messages
    for message in (detector[0], check[0]):
        assert message["text"].startswith("Anomaly") and mentions(message, "machine2")

    # The inbox links to the fleet page, which shows machine2 with its open episode.
    page = chromium.new_page()
    page.goto(system.url("INBOX_PORT", "/"))
    page.locator("#fleet-link").click()
    expect(page).to_have_url(system.url("FLEET_PAGE_PORT", "/"))
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(len(MACHINES))
    expect(page.locator("#rows tr[data-state=anomaly] td.machine b")).to_have_text("machine2")
    page.close()
    stop_and_check_nothing_is_left(system)
