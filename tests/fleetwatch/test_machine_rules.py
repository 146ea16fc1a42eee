"""fleetwatch.machine_rules and fleetwatch.feedback: per-machine thresholds and persistence, and
the bounded, fading raise a false alarm earns, applied by the real detector to simulator data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetwatch.detector import FleetDetector
from fleetwatch.feedback import (
    FalseAlarmRaise,
    FeedbackSettings,
    raise_for,
    rules_with_feedback,
)
from fleetwatch.machine_rules import MachineRule
from fleetwatch.state import FleetState
from machine_simulator.signals import FaultSchedule, FaultWindow, Fleet, simulate

START = 1_700_000_000.0
MINUTES = 66
# Minutes at which machine1's benign vibration pattern runs (15 s, +30 %), more than the
# episode tracker's recur gap (10 min) apart, so each is an episode of its own.
BUMPS = (20, 40)
OVERLOAD = (60, 63)  # machine1's real fault afterwards


def fleet_frame() -> pd.DataFrame:
    """Three simulated machines at 1 Hz; machine1 has a benign vibration pattern at `BUMPS`
    and an overload at `OVERLOAD`."""
    schedule = FaultSchedule(
        [FaultWindow("machine1", "overload", START + OVERLOAD[0] * 60, START + OVERLOAD[1] * 60)]
    )
    fleet = Fleet(["machine1", "machine2", "machine3"], seed=42, schedule=schedule)
    rows = [
        (r.machine_id, r.time, r.temperature, r.load, r.power, r.vibration)
        for readings in simulate(fleet, START, 1.0, MINUTES * 60)
        for r in readings
    ]
    frame = pd.DataFrame(
        rows, columns=["unique_id", "time", "temperature", "load", "power", "vibration"]
    )
    minute = (frame["time"] - START) / 60
    for at in BUMPS:
        bump = (frame["unique_id"] == "machine1") & (minute >= at) & (minute < at + 0.25)
        frame.loc[bump, "vibration"] *= 1.3
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    return frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return fleet_frame()


def episode_starts(scored: pd.DataFrame, machine: str) -> list[float]:
    """Minutes (from START) at which `machine`'s episodes opened."""
    rows = scored[(scored["unique_id"] == machine) & scored["episode_start"]]
    return [round((t.timestamp() - START) / 60, 1) for t in rows["time"]]


def test_without_rules_the_benign_pattern_and_the_overload_both_open_episodes(frame) -> None:
    scored = FleetDetector().score_frame(frame)
    starts = episode_starts(scored, "machine1")
    assert [int(m) for m in starts] == [*BUMPS, OVERLOAD[0]]
    assert episode_starts(scored, "machine2") == episode_starts(scored, "machine3") == []
    led = scored[(scored["unique_id"] == "machine1") & scored["episode_start"]]
    deviations = led[[f"dev_{f}" for f in ("load", "vibration", "power", "temperature")]].abs()
    assert deviations.idxmax(axis=1).tolist() == ["dev_vibration", "dev_vibration", "dev_load"]


def test_default_rules_change_nothing(frame) -> None:
    plain = FleetDetector().score_frame(frame)
    ruled = FleetDetector().score_frame(
        frame, rules={"machine1": MachineRule(), "unknown-machine": MachineRule(threshold=0.9)}
    )
    pd.testing.assert_frame_equal(plain, ruled)


def test_a_machine_threshold_changes_that_machines_flags_only(frame) -> None:
    plain = FleetDetector().score_frame(frame)
    ruled = FleetDetector().score_frame(frame, rules={"machine1": MachineRule(threshold=0.9)})
    assert episode_starts(ruled, "machine1") == []
    for machine in ("machine2", "machine3"):
        mine = plain["unique_id"] == machine
        pd.testing.assert_frame_equal(plain[mine], ruled[mine])
    # The scores are the detector's: before machine1's first flag they are the same.
    before = frame["time"] < pd.Timestamp(START + BUMPS[0] * 60, unit="s", tz="UTC")
    np.testing.assert_array_equal(plain.loc[before, "score"], ruled.loc[before, "score"])


def test_a_machine_persistence_needs_that_many_points_in_a_row(frame) -> None:
    ruled = FleetDetector().score_frame(frame, rules={"machine1": MachineRule(persistence=20)})
    starts = episode_starts(ruled, "machine1")
    assert [int(m) for m in starts] == [OVERLOAD[0]]  # the 15 s bumps are too short
    plain = FleetDetector().score_frame(frame)
    opened = plain[(plain["unique_id"] == "machine1") & plain["episode_start"]]["time"].iloc[-1]
    later = ruled[(ruled["unique_id"] == "machine1") & ruled["episode_start"]]["time"].iloc[-1]
    assert later > opened  # the overload opens 17 points later than with persistence 3


def test_a_feature_threshold_quiets_that_features_pattern_not_another_fault(frame) -> None:
    rule = MachineRule(feature_thresholds={"vibration": 0.845})
    ruled = FleetDetector().score_frame(frame, rules={"machine1": rule})
    assert [int(m) for m in episode_starts(ruled, "machine1")] == [OVERLOAD[0]]


def test_a_false_alarm_quiets_the_repeat_and_the_overload_still_opens(frame) -> None:
    """The evaluation's story in miniature: mark the first benign episode false at its
    resolution; the second is not alerted, the overload is."""
    state, raises, opened = FleetState.new(), [], []
    settings = FeedbackSettings()
    minute = ((frame["time"] - frame["time"].min()).dt.total_seconds() // 60).astype(int)
    for _, batch in frame.groupby(minute):
        now = batch["time"].max().timestamp()
        rules = rules_with_feedback({}, raises, now, 0.8, settings)
        _, events = state.process(batch, rules=rules)
        for event in events:
            episode = event.episode
            if event.kind == "opened":
                opened.append((episode.machine, int((episode.start / 1e9 - START) // 60)))
            elif not raises:
                amount = raise_for(episode.peak_score, 0.8, settings)
                assert 0 < amount <= settings.step
                raises.append(
                    FalseAlarmRaise(episode.machine, episode.top_features[0], amount, now)
                )
    assert raises[0].feature == "vibration"
    assert opened == [("machine1", BUMPS[0]), ("machine1", OVERLOAD[0])]


def test_raises_are_bounded_add_up_to_a_cap_and_fade() -> None:
    settings = FeedbackSettings(step=0.05, most=0.08, decay_seconds=1000.0)
    assert raise_for(0.99, 0.8, settings) == 0.05  # a strong peak: one step only
    assert raise_for(0.79, 0.8, settings) == 0.0  # already below the threshold
    marks = [FalseAlarmRaise("m", "load", 0.05, at=0.0), FalseAlarmRaise("m", "load", 0.05, 0.0)]
    rules = rules_with_feedback({}, marks, now=0.0, threshold=0.8, settings=settings)
    assert rules["m"].feature_thresholds == {"load": pytest.approx(0.88)}  # capped at most
    halfway = rules_with_feedback({}, marks, now=500.0, threshold=0.8, settings=settings)
    assert halfway["m"].feature_thresholds == {"load": pytest.approx(0.85)}
    assert rules_with_feedback({}, marks, now=1000.0, threshold=0.8, settings=settings) == {}
    before = rules_with_feedback({}, marks, now=-1.0, threshold=0.8, settings=settings)
    assert before == {}  # a raise does not act before it was given


def test_raises_build_on_the_machines_own_rule() -> None:
    settings = FeedbackSettings()
    base = {"m": MachineRule(threshold=0.85, persistence=5), "n": MachineRule(persistence=2)}
    marks = [FalseAlarmRaise("m", None, 0.02, at=0.0), FalseAlarmRaise("m", "power", 0.03, 0.0)]
    rules = rules_with_feedback(base, marks, now=0.0, threshold=0.8, settings=settings)
    assert rules["m"].threshold == pytest.approx(0.87)
    assert rules["m"].persistence == 5
    assert rules["m"].feature_thresholds == {"power": pytest.approx(0.90)}
    assert rules["n"] == MachineRule(persistence=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 1.0}, "threshold must be in"),
        ({"persistence": 0}, "persistence must be >= 1"),
        ({"persistence": 2.5}, "whole number"),
        ({"feature_thresholds": {"load": -0.1}}, "threshold for load"),
    ],
)
def test_bad_rules_are_refused_with_the_field_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        MachineRule(**kwargs)
