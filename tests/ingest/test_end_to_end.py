"""simulator -> broker -> bridge -> localflux: every reading exactly once, through faults.

The expected rows are a replay of the simulator's seed on its timeline (`/api/stats` gives the
first timestamp), so the check is exact: same rows, same tags, same values, same timestamps,
nothing missing and nothing twice.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pyarrow as pa
import pytest

from machine_simulator.payload import encode, reading_payload
from machine_simulator.signals import FIELDS, Fleet, timeline
from tests.fixtures.mqtt import MqttBroker, SimulatorProcess, publish_all
from tests.support import REPO_ROOT, wait_until

INTERVAL = 0.05
COLUMNS = ["machineID", "provider", *FIELDS, "time"]
Row = tuple  # (machineID, provider, temperature, load, power, vibration, time_ns)


def _row_key(row: Row) -> tuple[str, int]:
    return row[0], row[-1]


def stored_rows(server) -> list[Row]:
    """Every row of machine_data, sorted; [] before the table exists."""
    try:
        table = server.client().query("SELECT * FROM machine_data")
    except Exception as exc:  # the table is created by the first write
        if "machine_data" in str(exc) or "not found" in str(exc).lower():
            return []
        raise
    assert sorted(table.column_names) == sorted(COLUMNS), table.column_names
    times = table.column("time").cast(pa.int64()).to_pylist()
    columns = [table.column(c).to_pylist() for c in COLUMNS[:-1]]
    return sorted(((*values, t) for *values, t in zip(*columns, times, strict=True)), key=_row_key)


def replay(sim: SimulatorProcess, seed: int, machines: int = 3) -> list[Row]:
    """The rows the simulator's readings must become, from its seed and timeline."""
    stats = sim.get("api/stats")
    count = next(iter(stats["machines"].values()))["readings"]
    fleet = Fleet(machines, seed)
    rows = []
    for t in timeline(stats["first_time"], INTERVAL, count):
        for r in fleet.step(t):
            rows.append((r.machine_id, r.provider, *r.values().values(), r.time_ms * 1_000_000))
    return sorted(rows, key=_row_key)


def published_everything(sim: SimulatorProcess, total: int) -> bool:
    publisher = sim.get("api/stats")["publisher"]
    return publisher["acked"] >= total and publisher["queued"] == 0


def wait_for_rows(server, expected: int, timeout: float) -> list[Row]:
    rows: list[Row] = []

    def enough() -> bool:
        nonlocal rows
        rows = stored_rows(server)
        return len(rows) >= expected

    wait_until(enough, timeout, interval=0.5)
    return rows


@pytest.fixture
def start_bridge(bridge_factory, localflux_server):
    def start(broker: MqttBroker, **kwargs):
        return bridge_factory(
            broker.url,
            localflux_server.url,
            localflux_server.database,
            token=localflux_server.token or "",
            **kwargs,
        )

    return start


@pytest.mark.slow
def test_every_reading_lands_once_with_its_tags_fields_and_time(
    mqtt_broker: MqttBroker, localflux_server, start_bridge, simulator_factory
) -> None:
    start_bridge(mqtt_broker)
    sim = simulator_factory(mqtt_broker.url, interval=INTERVAL, backfill="3s", count=100, seed=11)
    total = 3 * (60 + 100)
    assert wait_until(lambda: published_everything(sim, total), 60, interval=0.3)
    rows = wait_for_rows(localflux_server, total, 30)
    assert rows == replay(sim, seed=11)


@pytest.mark.slow
def test_ground_truth_and_faulty_readings_land_too(
    mosquitto_broker: MqttBroker, localflux_server, start_bridge, simulator_factory
) -> None:
    start_bridge(mosquitto_broker)
    sim = simulator_factory(mosquitto_broker.url, interval=INTERVAL, count=80, seed=5)
    assert wait_until(lambda: sim.get("api/stats")["publisher"]["acked"] > 30, 20)
    sim.set_fault("machine2", "bearing", True)
    total = 3 * 80
    assert wait_until(lambda: published_everything(sim, total), 60, interval=0.3)
    rows = wait_for_rows(localflux_server, total, 30)
    [event] = sim.get("api/faults")
    assert (event["machineID"], event["kind"], event["active"]) == ("machine2", "bearing", True)
    expected = replay(sim, seed=5)
    # Same rows; machine2's values differ from the healthy replay only from the fault on.
    assert [(r[0], r[-1]) for r in rows] == [(r[0], r[-1]) for r in expected]
    start_ns = event["time"] * 1_000_000
    faulty = []
    for got, healthy in zip(rows, expected, strict=True):
        if got[0] != "machine2" or got[-1] < start_ns:
            assert got == healthy
        else:
            assert got[2:5] == healthy[2:5] and got[5] >= healthy[5]  # vibration only
            faulty.append(got[5] / healthy[5])
    assert len(faulty) > 20 and faulty[-1] > 1.01  # rising towards 2x over 60 s


@pytest.mark.slow
def test_broker_restart_and_a_20s_influx_outage_lose_and_double_nothing(
    mqtt_broker_factory, localflux_server, start_bridge, simulator_factory
) -> None:
    broker = mqtt_broker_factory("mosquitto", persistence=True)
    bridge = start_bridge(broker)
    live = 700  # 35 s of readings
    sim = simulator_factory(broker.url, interval=INTERVAL, count=live, seed=3)
    assert wait_until(lambda: len(stored_rows(localflux_server)) > 60, 30, interval=0.5)

    broker.restart()  # SIGTERM: Mosquitto saves the bridge's session and queued messages
    assert wait_until(lambda: sim.get("api/stats")["publisher"]["connected"], 30)
    time.sleep(3)

    localflux_server.stop()
    time.sleep(20)
    localflux_server.start()

    total = 3 * live
    assert wait_until(lambda: published_everything(sim, total), 90, interval=0.5)
    rows = wait_for_rows(localflux_server, total, 60)
    assert rows == replay(sim, seed=3)
    # Both faults really hit the bridge: it resumed its session and had to retry writes.
    assert "(session resumed)" in bridge.log() and "write failed" in bridge.log()


@pytest.mark.slow
def test_a_bridge_killed_while_influx_is_down_loses_nothing(
    mqtt_broker_factory, localflux_server, start_bridge, simulator_factory
) -> None:
    # Messages are acknowledged only once written, so the broker still holds what a dead
    # bridge had buffered and gives it to the next one.
    broker = mqtt_broker_factory("mosquitto", persistence=True)
    bridge = start_bridge(broker)
    localflux_server.stop()
    sim = simulator_factory(broker.url, interval=INTERVAL, count=60, seed=8)
    assert wait_until(lambda: "write failed" in bridge.log(), 30)
    assert wait_until(lambda: published_everything(sim, 180), 30, interval=0.3)
    bridge.signal_group(9)  # SIGKILL: no shutdown work
    localflux_server.start()
    start_bridge(broker)
    rows = wait_for_rows(localflux_server, 180, 30)
    assert rows == replay(sim, seed=8)


@pytest.mark.slow
def test_malformed_messages_are_counted_logged_and_skipped(
    mqtt_broker: MqttBroker, localflux_server, start_bridge
) -> None:
    bridge = start_bridge(mqtt_broker)
    fleet = Fleet(3, seed=1)
    good = [r for t in timeline(1_700_000_000.0, 1.0, 20) for r in fleet.step(t)]
    bad = [
        b"not json",
        json.dumps({"data": reading_payload(good[0])["data"], "time": 1}).encode(),  # no metadata
        json.dumps(
            {**reading_payload(good[0]), "data": [{"temperature": "hot"}, {"load": 1}]}
        ).encode(),
        b"{" + b'"x":1,' * 100_000 + b'"y":1}',  # huge
    ]
    payloads = [encode(reading_payload(r)) for r in good]
    mixed = payloads[:10] + bad + payloads[10:]
    publish_all(mqtt_broker, "machine/machine1", mixed)
    rows = wait_for_rows(localflux_server, len(good), 30)
    assert len(rows) == len(good)
    assert {(r[0], r[-1]) for r in rows} == {(r.machine_id, r.time_ms * 10**6) for r in good}
    log = bridge.log()
    assert "skipped malformed message on machine/machine1 (4 so far)" in log
    assert "not valid JSON" in log and "metadata.machineID doesn't exist" in log
    assert 'cannot convert "hot" to float' in log and "byte limit" in log
    # What the bridge does not implement is said at start, not ignored silently.
    assert "max_undelivered_messages (the broker's in-flight limit" in log


@pytest.mark.slow
def test_points_influx_refuses_cost_only_themselves(
    mqtt_broker: MqttBroker, localflux_server, start_bridge, tmp_path: Path
) -> None:
    # Without `type = "float"`, a string load reaches InfluxDB and conflicts with the float
    # column; the bridge splits the batch until only that point is refused.
    conf = tmp_path / "telegraf.conf"
    text = (REPO_ROOT / "telegraf" / "telegraf.conf").read_text()
    conf.write_text(
        re.sub(r'path = "data.1.load"\n\s*type = "float"', 'path = "data.1.load"', text)
    )
    bridge = start_bridge(mqtt_broker, config=conf)
    fleet = Fleet(1, seed=2)
    good = [fleet.step(1_700_000_000.0 + k)[0] for k in range(30)]
    payloads = [encode(reading_payload(r)) for r in good]
    wrong = reading_payload(fleet.step(1_700_000_100.0)[0])
    wrong["data"][1] = {"load": "high"}
    publish_all(mqtt_broker, "machine/machine1", payloads[:1])  # creates the float column
    assert wait_until(lambda: len(stored_rows(localflux_server)) == 1, 30, interval=0.3)
    publish_all(mqtt_broker, "machine/machine1", [*payloads[1:15], encode(wrong), *payloads[15:]])
    rows = wait_for_rows(localflux_server, len(good), 30)
    assert [r[-1] for r in rows] == [r.time_ms * 10**6 for r in good]
    assert wait_until(lambda: "InfluxDB rejected a point (1 so far)" in bridge.log(), 10)
    assert '"high"' in bridge.log()
