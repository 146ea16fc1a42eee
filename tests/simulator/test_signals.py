"""The signal model: healthy ranges and correlation, each fault's effect, determinism, ground truth."""

from __future__ import annotations

import statistics

import pytest

from machine_simulator.identity import valid_ean8
from machine_simulator.signals import (
    FAULT_KINDS,
    FIELDS,
    FaultParams,
    FaultSchedule,
    FaultWindow,
    Fleet,
    Reading,
    UnknownFaultKind,
    UnknownMachine,
    simulate,
    timeline,
)

T0 = 1_700_000_000.0


def run(fleet: Fleet, seconds: int, interval: float = 1.0, start: float = T0) -> list[Reading]:
    return [r for step in simulate(fleet, start, interval, round(seconds / interval)) for r in step]


def of(readings: list[Reading], machine_id: str) -> list[Reading]:
    return [r for r in readings if r.machine_id == machine_id]


def twins(kind: str, fault_at: float, seconds: int, interval: float = 1.0):
    """The same machine with and without a fault from `fault_at`: (faulty, healthy) readings."""
    faulty, healthy = Fleet(1, seed=7), Fleet(1, seed=7)
    times = list(timeline(T0, interval, round(seconds / interval)))
    a, b = [], []
    for t in times:
        if a and a[-1].time < fault_at <= t:
            faulty.set_fault("machine1", kind, True, at=fault_at)
        a.append(faulty.step(t)[0])
        b.append(healthy.step(t)[0])
    return a, b


def test_healthy_fleet_stays_in_range_with_correlated_sensors() -> None:
    readings = run(Fleet(3, seed=42), 3 * 3600)
    ranges = {
        "load": (30, 120),
        "temperature": (30, 45),
        "power": (170, 250),
        "vibration": (60, 105),
    }
    for machine_id in ("machine1", "machine2", "machine3"):
        mine = of(readings, machine_id)
        load = [r.load for r in mine]
        for name, (low, high) in ranges.items():
            values = [getattr(r, name) for r in mine]
            assert low <= min(values) and max(values) <= high, (machine_id, name)
            assert statistics.stdev(values) > 0.3, f"{name} is too flat to be realistic"
        for name in ("temperature", "power", "vibration"):
            r = statistics.correlation(load, [getattr(x, name) for x in mine])
            assert 0.3 < r < 0.999, (machine_id, name, r)  # follows load, but is not a copy
        assert all(r.fault is None for r in mine)


def test_values_are_floats_with_one_decimal() -> None:
    for reading in run(Fleet(2, seed=1), 120):
        for value in reading.values().values():
            assert isinstance(value, float)
            assert round(value, 1) == value


def test_same_seed_same_readings_other_seed_other_readings() -> None:
    a = run(Fleet(3, seed=42), 300)
    assert a == run(Fleet(3, seed=42), 300)
    b = run(Fleet(3, seed=43), 300)
    assert [r.values() for r in a] != [r.values() for r in b]


def test_identity_is_stable_per_seed_and_machine() -> None:
    fleet = Fleet(5, seed=42)
    again = Fleet(5, seed=42)
    for m in fleet.machine_ids:
        assert (fleet.machine(m).provider, fleet.machine(m).barcode) == (
            again.machine(m).provider,
            again.machine(m).barcode,
        )
        assert valid_ean8(fleet.machine(m).barcode)
    other = Fleet(5, seed=1)
    assert [fleet.machine(m).barcode for m in fleet.machine_ids] != [
        other.machine(m).barcode for m in other.machine_ids
    ]


def test_time_must_move_forward() -> None:
    fleet = Fleet(1)
    fleet.step(T0)
    with pytest.raises(ValueError, match="not after"):
        fleet.step(T0)


def test_overload_raises_load_by_steps_up_to_200_and_holds_it() -> None:
    at = T0 + 300.5
    faulty, healthy = twins("overload", at, 600)
    first = next(i for i, r in enumerate(faulty) if r.fault)
    assert faulty[first].load == pytest.approx(min(200, healthy[first].load + 20), abs=0.11)
    later = faulty[first + 6]  # 6 s in: the second step of +20
    assert later.load == pytest.approx(min(200, healthy[first + 6].load + 40), abs=0.11)
    held = [r.load for r in faulty[first + 60 :]]
    assert held == [200.0] * len(held)
    assert statistics.mean(r.power for r in faulty[first + 60 :]) > 280
    assert statistics.mean(r.temperature for r in faulty[-60:]) > max(
        r.temperature for r in healthy
    )
    assert faulty[:first] == healthy[:first]


def test_spike_bursts_to_2_5x_for_at_least_five_readings_every_30_to_60_s() -> None:
    interval = 0.05  # the burst rule counts readings, whatever the interval
    at = T0 + 10.01
    faulty, healthy = twins("spike", at, 400, interval)
    burst = [
        f.fault == "spike" and f.load > 1.8 * h.load for f, h in zip(faulty, healthy, strict=True)
    ]
    starts = [i for i in range(1, len(burst)) if burst[i] and not burst[i - 1]]
    ends = [i for i in range(1, len(burst)) if not burst[i] and burst[i - 1]]
    assert len(starts) >= 5
    assert faulty[starts[0]].time - at < interval * 1.5  # the first burst comes at once
    for s, e in zip(starts, ends, strict=False):
        assert 5.0 - interval <= (e - s) * interval <= 10.0 + interval
        for f, h in zip(faulty[s:e], healthy[s:e], strict=True):
            assert f.load == pytest.approx(2.5 * h.load, abs=0.2)
            assert f.power / h.power == pytest.approx(2.5, rel=0.02)
    gaps = [(s - e) * interval for e, s in zip(ends, starts[1:], strict=False)]
    assert all(30.0 - interval <= g <= 60.0 + interval for g in gaps), gaps


def test_spike_bursts_have_five_readings_even_when_readings_are_sparse() -> None:
    faulty, _ = twins("spike", T0 + 5.5, 3600, interval=2.0)  # 2 s apart: 5-10 s is 3-5 readings
    burst_lengths, run_length = [], 0
    for r in faulty:
        in_burst = r.fault == "spike" and r.power > 400
        if in_burst:
            run_length += 1
        elif run_length:
            burst_lengths.append(run_length)
            run_length = 0
    assert burst_lengths and min(burst_lengths) >= 5


def test_bearing_doubles_vibration_over_60_s_and_leaves_load_alone() -> None:
    faulty, healthy = twins("bearing", T0 + 100.5, 400)
    first = next(i for i, r in enumerate(faulty) if r.fault)
    assert [r.load for r in faulty] == [r.load for r in healthy]
    ratio_start = faulty[first].vibration / healthy[first].vibration
    ratio_mid = faulty[first + 30].vibration / healthy[first + 30].vibration
    assert ratio_start < 1.05 and 1.4 < ratio_mid < 1.6
    for f, h in zip(faulty[first + 60 :], healthy[first + 60 :], strict=True):
        assert f.vibration / h.vibration == pytest.approx(2.0, abs=0.01)


def test_drift_raises_temperature_a_degree_per_10_s_up_to_25() -> None:
    faulty, healthy = twins("drift", T0 + 100.0, 700)
    first = next(i for i, r in enumerate(faulty) if r.fault)
    for k in (0, 50, 100, 200):
        diff = faulty[first + k].temperature - healthy[first + k].temperature
        assert diff == pytest.approx(k / 10, abs=0.11)
    assert faulty[-1].temperature - healthy[-1].temperature == pytest.approx(25.0, abs=0.11)
    assert [r.load for r in faulty] == [r.load for r in healthy]


def test_stuck_freezes_temperature_while_load_moves() -> None:
    faulty, healthy = twins("stuck", T0 + 100.5, 400)
    first = next(i for i, r in enumerate(faulty) if r.fault)
    frozen = {r.temperature for r in faulty[first:]}
    assert frozen == {faulty[first - 1].temperature}
    assert [r.load for r in faulty] == [r.load for r in healthy]
    assert statistics.stdev(r.load for r in faulty[first:]) > 5


def test_clearing_a_fault_returns_to_the_healthy_signal() -> None:
    fleet, twin = Fleet(1, seed=3), Fleet(1, seed=3)
    times = list(timeline(T0, 1.0, 400))
    for t in times[:100]:
        fleet.step(t), twin.step(t)
    fleet.set_fault("machine1", "drift", True, at=times[99] + 0.5)
    for t in times[100:200]:
        fleet.step(t), twin.step(t)
    fleet.set_fault("machine1", "drift", False, at=times[199] + 0.5)
    after = [(fleet.step(t)[0], twin.step(t)[0]) for t in times[200:]]
    assert all(a == b for a, b in after)


def test_toggles_are_idempotent_and_logged_once() -> None:
    fleet = Fleet(2)
    fleet.step(T0)
    assert fleet.set_fault("machine2", "bearing", True, at=T0 + 1) is not None
    assert fleet.set_fault("machine2", "bearing", True, at=T0 + 2) is None
    assert fleet.set_fault("machine2", "drift", False, at=T0 + 3) is None  # not the active kind
    switched = fleet.set_fault("machine2", "stuck", True, at=T0 + 4)
    assert switched is not None and switched.kind == "stuck"
    assert fleet.set_fault("machine2", "stuck", False, at=T0 + 5) is not None
    assert fleet.set_fault("machine2", "stuck", False, at=T0 + 6) is None
    log = [(e.kind, e.active, e.time) for e in fleet.fault_log]
    assert log == [
        ("bearing", True, T0 + 1),
        ("bearing", False, T0 + 4),
        ("stuck", True, T0 + 4),
        ("stuck", False, T0 + 5),
    ]
    assert fleet.fault_log[0].to_json() == {
        "machineID": "machine2",
        "kind": "bearing",
        "active": True,
        "time": round((T0 + 1) * 1000),
    }


def test_unknown_machine_or_kind_is_rejected_without_a_change() -> None:
    fleet = Fleet(2)
    with pytest.raises(UnknownMachine):
        fleet.set_fault("machine9", "drift", True, at=T0)
    with pytest.raises(UnknownFaultKind, match="one of overload, spike"):
        fleet.set_fault("machine1", "melt", True, at=T0)
    assert fleet.fault_log == [] and fleet.active_fault("machine1") is None


def test_schedule_applies_faults_at_their_times_and_labels_readings() -> None:
    schedule = FaultSchedule(
        [
            FaultWindow("machine1", "overload", T0 + 60, T0 + 120),
            FaultWindow("machine2", "drift", T0 + 90),
        ]
    )
    fleet = Fleet(2, seed=5, schedule=schedule)
    readings = run(fleet, 200)
    m1, m2 = of(readings, "machine1"), of(readings, "machine2")
    assert {r.time - T0 for r in m1 if r.fault == "overload"} == set(range(60, 120))
    assert {r.time - T0 for r in m2 if r.fault == "drift"} == set(range(90, 200))
    assert [(e.machine_id, e.kind, e.active, e.time - T0) for e in fleet.fault_log] == [
        ("machine1", "overload", True, 60),
        ("machine2", "drift", True, 90),
        ("machine1", "overload", False, 120),
    ]


def test_random_schedule_is_reproducible_and_covers_every_kind() -> None:
    machines = [f"machine{i}" for i in range(1, 6)]
    a = FaultSchedule.random(machines, T0, T0 + 24 * 3600, seed=9)
    assert a.windows == FaultSchedule.random(machines, T0, T0 + 24 * 3600, seed=9).windows
    assert {w.kind for w in a.windows} == set(FAULT_KINDS)


def test_fault_params_are_configurable() -> None:
    params = FaultParams(drift_per_second=1.0, drift_max=5.0)
    fleet, twin = Fleet(1, seed=2, params=params), Fleet(1, seed=2)
    fleet.step(T0), twin.step(T0)
    fleet.set_fault("machine1", "drift", True, at=T0 + 0.5)
    last = [(fleet.step(T0 + k)[0], twin.step(T0 + k)[0]) for k in range(1, 30)][-1]
    assert last[0].temperature - last[1].temperature == pytest.approx(5.0, abs=0.11)


def test_a_fault_set_for_later_leaves_earlier_readings_healthy() -> None:
    # A toggle during backfill: the fault starts at wall-clock time, not in the past.
    fleet, twin = Fleet(1, seed=4), Fleet(1, seed=4)
    fleet.step(T0), twin.step(T0)
    fleet.set_fault("machine1", "overload", True, at=T0 + 100)
    early = [(fleet.step(T0 + k)[0], twin.step(T0 + k)[0]) for k in range(1, 100)]
    assert all(a == b for a, b in early)
    assert fleet.step(T0 + 100)[0].fault == "overload"


def test_an_evaluation_runs_hours_of_fleet_time_with_a_schedule() -> None:
    schedule = FaultSchedule.random([f"machine{i}" for i in range(1, 4)], T0, T0 + 6 * 3600, seed=1)
    fleet = Fleet(3, seed=42, schedule=schedule)
    readings = run(fleet, 6 * 3600)
    assert len(readings) == 3 * 6 * 3600
    assert {r.fault for r in readings} >= {None, *{w.kind for w in schedule.windows}}
    assert set(FIELDS) == set(readings[0].values())
