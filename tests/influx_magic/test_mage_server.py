"""`python -m influx_magic.mage_server`: the scheduler runs the pipeline every minute, the API
trigger is created from MAGE_API_TRIGGER_TOKEN (with Mage's login on, as in Docker), failures
get Mage's own notice, the GUI shows the pipeline, nothing in the project changes, SIGTERM
stops every process it started, and a refused trigger setup leaves Mage serving."""

from __future__ import annotations

import json
import re
import secrets
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from typing import Any

import psutil
import pytest

from influx_magic.mage_server import MageApi, MageServerError
from influx_magic.runlock import RunLock
from tests.influx_magic.conftest import HISTORY_SECONDS, PipelineWorld, seed_fault
from tests.influx_magic.helpers import PIPELINE, messages, project_files
from tests.support import PYTHON, ManagedProcess, wait_until

pytestmark = pytest.mark.slow
BLOCK_ORDER = [
    "load_influx_data",
    "transform_data",
    "detect_anomalies",
    "check_anomalies",
    "export_anomaly_scores",
]


def api(port: int, path: str, body: dict | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:  # Mage answers some refusals with a status too
        return {"error": {"code": error.code, "body": error.read().decode(errors="replace")}}


def start_mage(start_process, port: int, env: dict[str, str]) -> ManagedProcess:
    return start_process(
        "mage_server",
        [PYTHON, "-m", "influx_magic.mage_server", "--port", str(port)],
        env=env,
        url=f"http://127.0.0.1:{port}/api/status",
        timeout=240,
    )


def stop_and_check_nothing_is_left(server: ManagedProcess) -> None:
    family = psutil.Process(server.popen.pid).children(recursive=True)
    assert family  # mage start, its scheduler and server processes, its kernel
    server.popen.send_signal(signal.SIGTERM)
    assert server.popen.wait(timeout=60) == 0
    assert wait_until(
        lambda: not any(p.is_running() and p.status() != "zombie" for p in family), 10
    )


def test_the_schedule_runs_the_pipeline_and_the_api_trigger_is_created(
    world: PipelineWorld, start_process, port_factory
) -> None:
    seed_fault(world)
    before = project_files()
    port = port_factory()
    token, password = secrets.token_hex(12), secrets.token_hex(8)
    # Login on, as in the Docker stack: the launcher logs in as the owner to create the trigger.
    env = {
        "MAGE_API_TRIGGER_TOKEN": token,
        "REQUIRE_USER_AUTHENTICATION": "1",
        "DEFAULT_OWNER_PASSWORD": password,
    }
    server = start_mage(start_process, port, env)
    owner = MageApi(f"http://127.0.0.1:{port}", auth_required=True, password=password)

    def status(run_id: object) -> str:
        return owner.call("GET", f"/api/pipeline_runs/{run_id}")["pipeline_run"]["status"]

    # The every-minute trigger fires within a minute and the run takes some seconds; the bound
    # is generous because a loaded CI machine is slow to start Mage's run processes.
    runs_path = f"/api/pipeline_runs?pipeline_uuid={PIPELINE}&_limit=5"
    assert wait_until(lambda: messages(world.receiver, "Anomaly"), timeout=240, interval=1), [
        (run["id"], run["status"]) for run in owner.call("GET", runs_path)["pipeline_runs"]
    ]
    alert = messages(world.receiver, "Anomaly", "machine2")
    assert len(alert) == 1
    assert "ProcessQueue patched" in server.log()  # through influx_magic.mage_patches
    link = re.search(
        rf"http://127\.0\.0\.1:{port}/pipelines/{PIPELINE}/runs/(\d+)", json.dumps(alert)
    )
    assert link, alert
    assert wait_until(lambda: status(link.group(1)) == "completed", timeout=120)

    schedules_path = f"/api/pipelines/{PIPELINE}/pipeline_schedules"
    assert "error" in api(port, schedules_path)  # login is on

    def api_trigger() -> dict | None:
        schedules = owner.call("GET", schedules_path)
        found = [s for s in schedules["pipeline_schedules"] if s["schedule_type"] == "api"]
        return found[0] if found else None

    assert wait_until(lambda: api_trigger() is not None, timeout=30)
    schedule_id = api_trigger()["id"]
    trigger = f"/api/pipeline_schedules/{schedule_id}/pipeline_runs"
    no_variables = {"pipeline_run": {"variables": {}}}
    assert "error" in api(port, f"{trigger}/not-{token}", no_variables)
    started = api(port, f"{trigger}/{token}", no_variables)["pipeline_run"]
    assert wait_until(lambda: status(started["id"]) in ("completed", "failed"), 180, interval=1)
    assert status(started["id"]) == "completed"
    assert len(world.receiver.requests) == 1  # no new data, no new alert

    # A run that fails gets Mage's own notice, on SLACK_WEBHOOK_URL as MAGE_SLACK_WEBHOOK_URL is
    # empty, with a link to the run.
    world.influx.kill()
    failing = api(port, f"{trigger}/{token}", no_variables)["pipeline_run"]

    def notices() -> list[str]:
        texts = [json.dumps(body) for body in world.receiver.payloads()]
        return [t for t in texts if "Failed" in t and f"/runs/{failing['id']}" in t]

    assert wait_until(notices, timeout=180, interval=1), world.receiver.payloads()
    assert status(failing["id"]) == "failed"
    assert len(messages(world.receiver, "Anomaly")) == 1
    assert token not in server.log()

    stop_and_check_nothing_is_left(server)
    assert project_files() == before  # `mage start` left `git status` as it was


def test_two_shards_run_in_parallel_every_minute(
    world: PipelineWorld, start_process, port_factory
) -> None:
    """FLEETWATCH_SHARDS=2: a trigger per shard, and Mage runs the shards' runs side by side
    (its run records overlap in time); each shard commits its own state."""
    seed_fault(world)
    before = project_files()
    port = port_factory()
    server = start_mage(start_process, port, {"FLEETWATCH_SHARDS": "2"})
    mage = MageApi(f"http://127.0.0.1:{port}")

    def minute_runs() -> list[dict]:
        """Completed runs of the latest minute that has a completed run of every shard."""
        try:
            runs = mage.call("GET", f"/api/pipeline_runs?pipeline_uuid={PIPELINE}&_limit=20")
        except MageServerError:  # still migrating its database
            return []
        by_minute: dict[str, list[dict]] = {}
        for run in runs["pipeline_runs"]:
            if run["status"] == "completed":
                by_minute.setdefault(str(run["execution_date"])[:16], []).append(run)
        full = [group for _, group in sorted(by_minute.items()) if len(group) == 2]
        return full[-1] if full else []

    assert wait_until(minute_runs, timeout=300, interval=2)
    first, second = sorted(minute_runs(), key=lambda run: run["started_at"])
    assert {first["pipeline_schedule_name"], second["pipeline_schedule_name"]} == {
        "every_minute",
        "every_minute_shard_1",
    }
    assert second["started_at"] < first["completed_at"], (first, second)  # side by side
    root = world.state_dir
    assert json.loads((root / "shards.json").read_text()) == {"shards": 2}
    for index in range(2):
        assert (root / "shards-2" / f"shard-{index}" / "fleetwatch-state.zip").exists()
    assert len(messages(world.receiver, "Anomaly", "machine2")) == 1
    stop_and_check_nothing_is_left(server)
    assert project_files() == before  # the shard trigger lives in Mage's database only


@pytest.mark.browser
def test_the_pipeline_page_shows_the_five_blocks_in_order(
    local_dirs, start_process, port_factory, tmp_path, chromium
) -> None:
    before = project_files()
    port = port_factory()
    # Scheduled runs fail fast and quietly here: no InfluxDB, no webhook.
    env = {
        "MAGE_API_TRIGGER_TOKEN": "",
        "INFLUX_HOST": "http://127.0.0.1:9",
        "SLACK_WEBHOOK_URL": "",
    }
    server = start_mage(start_process, port, env)

    page = chromium.new_page(viewport={"width": 1600, "height": 1200})
    page.goto(f"http://127.0.0.1:{port}/pipelines/{PIPELINE}/edit", timeout=120_000)
    page.get_by_text(BLOCK_ORDER[-1], exact=True).first.wait_for(timeout=120_000)
    shown = page.evaluate(
        """names => {
            const wanted = new Set(names), found = [];
            const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            while (walker.nextNode()) {
                const text = walker.currentNode.nodeValue.trim();
                if (wanted.has(text)) found.push(text);
            }
            return found;
        }""",
        BLOCK_ORDER,
    )
    page.screenshot(path=str(tmp_path / "pipeline.png"))

    assert list(dict.fromkeys(shown)) == BLOCK_ORDER
    stop_and_check_nothing_is_left(server)
    assert project_files() == before


def test_a_refused_api_trigger_login_is_logged_and_mage_keeps_serving(
    local_dirs, start_process, port_factory
) -> None:
    """The owner's password is no longer DEFAULT_OWNER_PASSWORD (changed in Mage's UI, or set
    again in .env after the first start): the launcher's login is refused. It must say so and
    keep Mage running; exiting made `restart: unless-stopped` loop the container."""
    port = port_factory()
    first_password, later_password = secrets.token_hex(8), secrets.token_hex(8)
    token = secrets.token_hex(12)
    # Scheduled runs fail fast and quietly here: no InfluxDB, no webhook.
    quiet = {"INFLUX_HOST": "http://127.0.0.1:9", "SLACK_WEBHOOK_URL": ""}
    login_on = {**quiet, "REQUIRE_USER_AUTHENTICATION": "1"}
    # The first start creates the owner (admin@admin.com) with the password of that moment.
    first = start_mage(
        start_process,
        port,
        {**login_on, "DEFAULT_OWNER_PASSWORD": first_password, "MAGE_API_TRIGGER_TOKEN": ""},
    )
    assert wait_until(lambda: _logs_in(port, first_password), timeout=60)
    stop_and_check_nothing_is_left(first)

    later = {**login_on, "DEFAULT_OWNER_PASSWORD": later_password, "MAGE_API_TRIGGER_TOKEN": token}
    server = start_mage(start_process, port, later)
    assert wait_until(lambda: "API trigger not set up" in server.log(), timeout=120), server.log()
    refusal = next(line for line in server.log().splitlines() if "API trigger not set up" in line)
    assert "/api/sessions" in refusal and "DEFAULT_OWNER_PASSWORD" in refusal

    # Still serving, well after the refusal: the launcher and Mage are up and answer.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert server.alive(), server.log()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200  # what the compose healthcheck asks
        time.sleep(1)
    assert "mage start exited" not in server.log()
    owner = MageApi(f"http://127.0.0.1:{port}", auth_required=True, password=first_password)
    schedules = owner.call("GET", f"/api/pipelines/{PIPELINE}/pipeline_schedules")
    assert not [s for s in schedules["pipeline_schedules"] if s["schedule_type"] == "api"]
    for secret in (token, first_password, later_password):
        assert secret not in server.log()
    stop_and_check_nothing_is_left(server)


def _logs_in(port: int, password: str) -> bool:
    """True once Mage accepts the owner's login with `password`."""
    owner = MageApi(f"http://127.0.0.1:{port}", auth_required=True, password=password)
    try:
        owner.call("GET", "/api/status")
    except MageServerError:
        return False
    return True


def test_a_run_interrupted_by_ctrl_c_is_marked_failed_when_mage_starts_again(
    world: PipelineWorld, start_process, port_factory
) -> None:
    world.telemetry.write(HISTORY_SECONDS)  # healthy machines only
    port, token = port_factory(), secrets.token_hex(12)
    env = {"MAGE_API_TRIGGER_TOKEN": token}
    server = start_mage(start_process, port, env)

    def status(run_id: object) -> str:
        return api(port, f"/api/pipeline_runs/{run_id}")["pipeline_run"]["status"]

    def api_triggers() -> list[dict]:
        schedules = api(port, f"/api/pipelines/{PIPELINE}/pipeline_schedules")
        return [s for s in schedules.get("pipeline_schedules", []) if s["schedule_type"] == "api"]

    def trigger(variables: dict) -> int:
        (api_trigger,) = api_triggers()
        path = f"/api/pipeline_schedules/{api_trigger['id']}/pipeline_runs/{token}"
        return api(port, path, {"pipeline_run": {"variables": variables}})["pipeline_run"]["id"]

    # mage_server creates the API trigger once Mage answers: the schedule may come first.
    assert wait_until(lambda: bool(api_triggers()), 30)
    # The run waits in its loader for the lock the test holds: it is running when Ctrl-C comes.
    with RunLock(world.state_dir).hold(timeout=0, what="the test"):
        interrupted = trigger({"lock_timeout_seconds": 600})
        assert wait_until(lambda: status(interrupted) == "running", timeout=120, interval=1)
        server.popen.send_signal(signal.SIGINT)  # Ctrl-C
        assert server.popen.wait(timeout=60) == 0
    database = world.dirs["MAGE_DATA_DIR"] / "mage-ai.db"
    with sqlite3.connect(database) as db:  # Mage itself left it running
        (left,) = db.execute("SELECT status FROM pipeline_run WHERE id = ?", (interrupted,))
    assert left == ("RUNNING",)

    again = start_mage(start_process, port, env)
    assert status(interrupted) == "failed"  # right at the start, not after a schedule tick
    assert "run(s) the last Mage left unfinished as failed" in again.log()
    after = trigger({})
    assert wait_until(lambda: status(after) in ("completed", "failed"), timeout=180, interval=1)
    assert status(after) == "completed"
    assert world.receiver.requests == []  # no episode without a fault
