"""Matching episodes to ground-truth faults, and the scripted schedule they come from."""

from __future__ import annotations

import pytest

from detection_eval.episode_matching import AlertedSpan, Fault, match
from detection_eval.fault_script import scripted_faults

KINDS = ("overload", "spike", "bearing", "drift", "stuck")


def test_recall_latency_false_episodes_and_precision() -> None:
    faults = [
        Fault("m1", "drift", 1000.0, 1300.0),
        Fault("m1", "drift", 5000.0, 5300.0),
        Fault("m2", "spike", 1000.0, 1200.0),
        Fault("m2", "stuck", 3000.0, 3300.0),  # never detected
    ]
    episodes = [
        AlertedSpan("m1", 1010.0, 1020.0),  # drift 1: 20 s
        AlertedSpan("m1", 1100.0, 1100.0),  # drift 1 again: counted for the kind, not as detection
        AlertedSpan("m1", 5040.0, 5060.0),  # drift 2: 60 s
        AlertedSpan("m2", 1001.0, 1005.0),  # spike: 5 s
        AlertedSpan("m2", 1390.0, 1390.0),  # 190 s after the spike ended: within grace
        AlertedSpan("m2", 2000.0, 2000.0),  # false
        AlertedSpan("m3", 1010.0, 1010.0),  # false: the other machine's fault does not count
    ]
    result = match(faults, episodes, machine_seconds=3 * 43200.0, grace=300.0, kinds_order=KINDS)
    assert list(result.kinds) == list(KINDS)
    drift = result.kinds["drift"]
    assert (drift.events, drift.detected, drift.episodes, drift.recall) == (2, 2, 3, 1.0)
    assert drift.latency(0.5) == pytest.approx(40.0)
    assert drift.latency(0.95) == pytest.approx(58.0)
    assert result.kinds["spike"].latencies == [5.0] and result.kinds["spike"].episodes == 2
    assert result.kinds["stuck"].recall == 0.0 and result.kinds["stuck"].latency(0.5) is None
    assert result.kinds["overload"].recall is None  # none injected
    assert result.false_episodes == 2 and result.total_episodes == 7
    assert result.machine_days == 1.5
    assert result.false_per_machine_day == pytest.approx(2 / 1.5)
    assert result.precision == pytest.approx(5 / 7)


def test_an_episode_open_before_the_fault_does_not_detect_it() -> None:
    faults = [Fault("m1", "overload", 1000.0, 1300.0)]
    result = match(faults, [AlertedSpan("m1", 990.0, 995.0)], machine_seconds=86400.0)
    assert result.kinds["overload"].detected == 0 and result.false_episodes == 1


def test_an_episode_goes_to_the_latest_fault_not_the_previous_one_s_grace() -> None:
    faults = [Fault("m1", "drift", 1000.0, 1100.0), Fault("m1", "stuck", 1200.0, 1500.0)]
    result = match(
        faults, [AlertedSpan("m1", 1250.0, 1250.0)], machine_seconds=86400.0, grace=300.0
    )
    assert result.kinds["stuck"].detected == 1 and result.kinds["drift"].detected == 0


def test_scripted_faults_are_seeded_and_cover_every_kind_on_a_short_run() -> None:
    machines = [f"machine{i}" for i in range(1, 6)]
    first = scripted_faults(machines, 0.0, 3600.0, KINDS, seed=5)
    assert first == scripted_faults(machines, 0.0, 3600.0, KINDS, seed=5)
    assert first != scripted_faults(machines, 0.0, 3600.0, KINDS, seed=6)
    assert sorted(f.kind for f in first) == sorted(KINDS)  # one each, machine k starts at kind k
    longer = scripted_faults(machines[:2], 0.0, 6 * 3600.0, KINDS, seed=5)
    for machine in machines[:2]:
        own = [f for f in longer if f.machine_id == machine]
        assert len({f.kind for f in own}) == len(KINDS)
        for earlier, later in zip(own, own[1:], strict=False):
            assert later.start - earlier.end >= 600.0  # healthy gap between faults
        assert own[0].start >= 1800.0 and own[-1].end + 600.0 <= 6 * 3600.0


def test_too_short_a_run_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too short"):
        scripted_faults(["m1"], 0.0, 600.0, KINDS, seed=1)
