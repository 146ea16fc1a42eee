"""The simulator publishes its backfill only into an empty `machine_data`, asking a real
localflux (or, in contract mode, a real InfluxDB 3) over the HTTP query API.

No broker runs here: what the simulator decided shows in `/api/stats` (`backfill_readings`)
whether or not its readings reach a broker.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import pytest
from influxdb_client_3 import Point

from machine_simulator.history_check import HistoryCheckError, machine_data_has_rows
from tests.support import PYTHON, ManagedProcess, free_port

BACKFILL_SECONDS = 10  # at --interval 1: ten readings per machine


def start_simulator(
    start_process, port_factory, influx: Any, *extra: str, token: str | None = None
) -> tuple[ManagedProcess, int]:
    port = port_factory()
    command = [
        PYTHON, "-m", "machine_simulator",
        "--broker", f"tcp://127.0.0.1:{free_port()}",  # nothing listens: readings stay queued
        "--port", str(port),
        "--interval", "1",
        "--backfill", f"{BACKFILL_SECONDS}s",
        "--count", "1",
        "--influx-host", influx.url,
        "--influx-database", influx.database,
        *extra,
    ]  # fmt: skip
    env = {"INFLUX_TOKEN": (influx.token or "") if token is None else token}
    process = start_process(
        f"simulator-{port}", command, env=env, url=f"http://127.0.0.1:{port}/api/machines"
    )
    return process, port


def backfill_readings(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats", timeout=10) as response:
        return json.loads(response.read())["backfill_readings"]


def write_point(influx: Any, table: str) -> None:
    with influx.client() as client:
        client.write(Point(table).tag("machineID", "machine1").field("load", 80.0))


def test_an_empty_database_gets_the_backfill(localflux_server, start_process, port_factory) -> None:
    # No database at all yet (InfluxDB answers the query with 404).
    sim, port = start_simulator(start_process, port_factory, localflux_server)
    assert backfill_readings(port) == BACKFILL_SECONDS
    assert "is empty: backfill first" in sim.log()
    sim.stop()

    # The database exists, machine_data does not.
    write_point(localflux_server, "something_else")
    sim, port = start_simulator(start_process, port_factory, localflux_server)
    assert backfill_readings(port) == BACKFILL_SECONDS


def test_readings_in_machine_data_mean_no_backfill(
    localflux_server, start_process, port_factory
) -> None:
    write_point(localflux_server, "machine_data")

    sim, port = start_simulator(start_process, port_factory, localflux_server)
    assert backfill_readings(port) == 0
    assert "already holds readings: no backfill" in sim.log()
    sim.stop()

    # Switched off, the backfill goes out whatever the database holds.
    sim, port = start_simulator(
        start_process, port_factory, localflux_server, "--no-backfill-if-empty"
    )
    assert backfill_readings(port) == BACKFILL_SECONDS


def test_a_refused_token_stops_the_simulator_before_it_publishes(
    localflux_factory, start_process, port_factory
) -> None:
    influx = localflux_factory(token="apiv3_right")
    port = port_factory()
    command = [
        PYTHON, "-m", "machine_simulator", "--broker", f"tcp://127.0.0.1:{free_port()}",
        "--port", str(port), "--backfill", "10s", "--influx-host", influx.url,
    ]  # fmt: skip
    sim = start_process(f"simulator-{port}", command, env={"INFLUX_TOKEN": "apiv3_wrong"})
    assert sim.popen.wait(timeout=60) == 1
    assert "refused the token (HTTP 401): check INFLUX_TOKEN" in sim.log()
    assert "apiv3_wrong" not in sim.log()

    sim, port = start_simulator(start_process, port_factory, influx, token="apiv3_right")
    assert backfill_readings(port) == BACKFILL_SECONDS


def test_the_check_waits_for_influxdb_to_start(localflux_server) -> None:
    """`make run` and the Docker stack start the simulator beside InfluxDB."""
    write_point(localflux_server, "machine_data")
    localflux_server.stop()
    answers: list[object] = []
    asking = threading.Thread(
        target=lambda: answers.append(
            machine_data_has_rows(localflux_server.url, localflux_server.database, timeout=60)
        )
    )
    asking.start()
    time.sleep(2)
    assert not answers  # still asking
    localflux_server.start()
    asking.join(timeout=60)
    assert answers == [True]


def test_no_answer_in_time_is_an_error_not_a_guess() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(HistoryCheckError, match=r"did not answer within 2 s .* unknown whether"):
        machine_data_has_rows(url, "machines", timeout=2)
    assert time.monotonic() - started < 10
