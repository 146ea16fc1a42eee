"""The simulator process publishing through real brokers: payloads, timeline, replay, ground truth."""

from __future__ import annotations

import json

import pytest

from machine_simulator.payload import reading_payload
from machine_simulator.signals import FIELDS, Fleet, timeline
from tests.fixtures.mqtt import MqttBroker, MqttSubscriber
from tests.support import wait_until

INTERVAL = 0.05
BACKFILL_READINGS = 40  # "2s" at 0.05 s
LIVE = 60


def readings_by_machine(subscriber: MqttSubscriber) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for topic, payload in subscriber.messages:
        if topic.startswith("machine/"):
            found.setdefault(topic.removeprefix("machine/"), []).append(json.loads(payload))
    return found


@pytest.mark.slow
def test_backfill_then_live_readings_replay_exactly_from_the_seed(
    mqtt_broker: MqttBroker, simulator_factory
) -> None:
    subscriber = MqttSubscriber(mqtt_broker, "machine/+")
    sim = simulator_factory(mqtt_broker.url, interval=INTERVAL, backfill="2s", count=LIVE, seed=7)
    total = BACKFILL_READINGS + LIVE
    assert wait_until(lambda: len(subscriber.messages) >= 3 * total, 30)
    assert wait_until(lambda: sim.get("api/stats")["publisher"]["acked"] == 3 * total, 10)
    stats = sim.get("api/stats")
    assert stats["publisher"]["dropped"] == 0

    # Everything published equals a replay of the same seed on the same timeline.
    fleet = Fleet(3, seed=7)
    expected: dict[str, list[dict]] = {}
    for t in timeline(stats["first_time"], INTERVAL, total):
        for reading in fleet.step(t):
            expected.setdefault(reading.machine_id, []).append(reading_payload(reading))
    got = readings_by_machine(subscriber)
    assert got == expected

    # The backfill lies in the past, before the first live reading, on the same grid.
    times = [p["time"] for p in got["machine1"]]
    assert times == sorted(set(times))
    assert abs(times[BACKFILL_READINGS] - stats["live_from"] * 1000) <= 1  # first live reading
    assert times[0] < times[BACKFILL_READINGS] - 1900
    sample = got["machine2"][0]
    assert list(sample) == ["metadata", "data", "time"]
    assert [list(d) for d in sample["data"]] == [[f] for f in FIELDS]
    assert all(isinstance(v, float) for d in sample["data"] for v in d.values())
    subscriber.close()


@pytest.mark.slow
def test_fault_toggles_publish_ground_truth_outside_the_telemetry_topics(
    mqtt_broker: MqttBroker, simulator_factory
) -> None:
    everything = MqttSubscriber(mqtt_broker, "#")
    sim = simulator_factory(mqtt_broker.url, interval=INTERVAL)
    assert wait_until(lambda: sim.get("api/stats")["publisher"]["acked"] > 0, 20)
    sim.set_fault("machine2", "overload", True)
    sim.set_fault("machine2", "overload", True)  # idempotent: no second event
    since = sim.get("api/machines/machine2")["fault"]["since"]
    assert wait_until(
        lambda: sim.get("api/machines/machine2")["reading"]["time"] > since + 1000, 20
    )
    sim.set_fault("machine2", "overload", False)
    log = sim.get("api/faults")
    assert [(e["machineID"], e["kind"], e["active"]) for e in log] == [
        ("machine2", "overload", True),
        ("machine2", "overload", False),
    ]
    assert log[0]["time"] == since

    def fault_messages() -> list[tuple[str, bytes]]:
        return [(t, p) for t, p in everything.messages if t.startswith("faults/")]

    assert wait_until(lambda: len(fault_messages()) >= 2, 10)
    assert [json.loads(p) for _, p in fault_messages()] == log
    assert {t for t, _ in fault_messages()} == {"faults/machine2"}

    # Readings while the fault was on carry load +20 over the healthy twin (same seed).
    readings = [json.loads(p) for t, p in everything.messages if t == "machine/machine2"]
    twin = Fleet(3, seed=42)
    healthy = {}
    for t in timeline(sim.get("api/stats")["first_time"], INTERVAL, len(readings)):
        reading = twin.step(t)[1]
        healthy[reading.time_ms] = reading.load
    during = [r for r in readings if log[0]["time"] <= r["time"] < log[1]["time"]]
    assert len(during) >= 20
    for r in during:
        assert r["data"][1]["load"] == pytest.approx(min(200.0, healthy[r["time"]] + 20), abs=0.11)
    after = [r for r in readings if r["time"] >= log[1]["time"]]
    for r in after:
        assert r["data"][1]["load"] == healthy[r["time"]]
    everything.close()
