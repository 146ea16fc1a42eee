"""fleetwatch.episodes: the alarm rule against a per-point loop, and episode events."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwatch.episodes import AlarmRule, AlarmState, EpisodeTracker, episode_id
from tests.fleetwatch.reference import NaiveAlarm

S = 1_000_000_000  # one second in ns
T0 = 1_700_000_000 * S
FEATURES = ("load", "power")
RULE = AlarmRule(persistence=3, quiet_points=5, quiet_seconds=60.0)

rules = st.builds(
    AlarmRule,
    persistence=st.integers(1, 4),
    quiet_points=st.integers(1, 5),
    quiet_seconds=st.one_of(st.none(), st.sampled_from([3.0, 10.0])),
)
# Per machine: (seconds since the previous point, above threshold?)
sequences = st.lists(
    st.lists(st.tuples(st.integers(1, 12), st.booleans()), min_size=1, max_size=40),
    min_size=1,
    max_size=3,
)


def grouped(seqs):
    """Points grouped by machine: rows, starts, times, above."""
    rows, times, above = [], [], []
    for m, seq in enumerate(seqs):
        t = T0
        for gap, up in seq:
            t += gap * S
            rows.append(m)
            times.append(t)
            above.append(up)
    rows = np.array(rows, np.intp)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    return rows, starts, np.array(times, np.int64), np.array(above, bool)


def run_alarm(state, rule, rows, starts, times, above):
    steps = state.step(rule, rows[starts], starts, times, above)
    ends = np.r_[starts[1:], len(rows)] - 1
    state.commit(rows[starts], steps, ends)
    return steps


@settings(max_examples=200, deadline=None)
@given(rules, sequences, st.integers(0, 40))
def test_alarm_rule_equals_a_per_point_loop_and_survives_a_split(rule, seqs, cut):
    rows, starts, times, above = grouped(seqs)
    naive = {m: NaiveAlarm(rule) for m in range(len(seqs))}
    expected = pd.DataFrame(
        [naive[r].step(int(t), bool(a)) for r, t, a in zip(rows, times, above, strict=True)]
    )

    whole = AlarmState()
    whole.add_models(len(seqs))
    steps = run_alarm(whole, rule, rows, starts, times, above)
    for name in expected.columns:
        assert (steps[name] == expected[name].to_numpy()).all(), name

    # Each machine's points in two batches, the state carried through its arrays.
    state = AlarmState()
    state.add_models(len(seqs))
    mine = [np.flatnonzero(rows == m) for m in range(len(seqs))]
    for part in (slice(None, cut), slice(cut, None)):
        batch = np.concatenate([idx[part] for idx in mine])
        if len(batch):
            r = rows[batch]
            s = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
            steps = run_alarm(state, rule, r, s, times[batch], above[batch])
            for name in expected.columns:
                assert (steps[name] == expected[name].to_numpy()[batch]).all(), name
        carried = AlarmState()
        carried.restore({k: v.copy() for k, v in state.state().items()})
        state = carried


def scored_frame(points, rule=RULE, state=None):
    """A frame like FleetDetector.score_frame's from (machine, seconds, above) points."""
    machines = sorted({p[0] for p in points})
    index = {m: i for i, m in enumerate(machines)}
    frame = pd.DataFrame(points, columns=["unique_id", "seconds", "above"])
    frame = frame.sort_values(["unique_id", "seconds"], kind="stable").reset_index(drop=True)
    rows = frame["unique_id"].map(index).to_numpy(np.intp)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    if state is None:
        state = AlarmState()
        state.add_models(len(machines))
    times = T0 + frame["seconds"].to_numpy(np.int64) * S
    steps = run_alarm(state, rule, rows, starts, times, frame["above"].to_numpy(bool))
    frame["time"] = pd.to_datetime(times, utc=True)
    frame["score"] = np.where(frame["above"], 0.9, 0.1) + frame["seconds"] * 1e-6
    frame["status"] = "scored"
    for name in ("in_episode", "episode_start", "episode_end", "is_anomaly"):
        frame[name] = steps[name]
    frame["load"] = np.where(frame["above"], 200.0, 70.0)
    frame["power"] = 210.0
    frame["dev_load"] = np.where(frame["above"], 0.4, 0.0)
    frame["dev_power"] = 0.0
    return frame


def kinds(events):
    return [(e.kind, e.episode.machine, (e.time - T0) // S) for e in events]


def test_a_single_spike_is_not_an_episode():
    points = [("m1", s, s == 10) for s in range(40)]
    tracker = EpisodeTracker(FEATURES, RULE)
    assert tracker.update(scored_frame(points)) == []
    assert tracker.open == {}


def test_a_sustained_fault_opens_once_and_resolves_once():
    points = [("m1", s, 100 <= s < 200) for s in range(260)]
    tracker = EpisodeTracker(FEATURES, RULE)
    events = tracker.update(scored_frame(points))
    assert kinds(events) == [("opened", "m1", 102), ("resolved", "m1", 204)]
    opened, resolved = (e.episode for e in events)
    assert opened.episode_id == resolved.episode_id == episode_id("m1", T0 + 102 * S)
    assert (resolved.start - T0) // S == 102 and (resolved.end - T0) // S == 199
    assert resolved.resolution == "quiet" and resolved.points == 98
    assert resolved.peak_values == {"load": 200.0, "power": 210.0}
    assert resolved.top_features == ["load"]
    assert resolved.peak_score == max(0.9 + s * 1e-6 for s in range(102, 200))


def test_flapping_inside_the_cooldown_sends_nothing_more():
    fault = {*range(10, 20), *range(40, 50), *range(300, 400)}
    points = [("m1", s, s in fault) for s in range(1000)]
    tracker = EpisodeTracker(FEATURES, RULE, cooldown_seconds=120.0)
    events = tracker.update(scored_frame(points))
    # 10-19 alerts; 40-49 starts within 120 s of the resolution at 24: recorded, silent;
    # 300-399 starts after the cooldown: a new alert.
    assert kinds(events) == [
        ("opened", "m1", 12),
        ("resolved", "m1", 24),
        ("opened", "m1", 302),
        ("resolved", "m1", 404),
    ]
    assert tracker.suppressed == 1


def test_an_episode_still_open_when_the_cooldown_ends_is_announced_then():
    fault = {*range(10, 20), *range(40, 300)}
    points = [("m1", s, s in fault) for s in range(400)]
    tracker = EpisodeTracker(FEATURES, RULE, cooldown_seconds=120.0)
    events = tracker.update(scored_frame(points))
    assert kinds(events) == [
        ("opened", "m1", 12),
        ("resolved", "m1", 24),
        ("opened", "m1", 144),
        ("resolved", "m1", 304),
    ]
    late = events[2]
    assert late.delayed and (late.episode.start - T0) // S == 42


def test_quiet_points_resolve_across_frames():
    points = [("m1", s, 10 <= s < 30) for s in range(40)]
    tracker = EpisodeTracker(FEATURES, RULE)
    state = AlarmState()  # one alarm state across both frames, as the detector keeps it
    state.add_models(1)
    first = tracker.update(scored_frame(points[:25], state=state))
    assert kinds(first) == [("opened", "m1", 12)]
    second = tracker.update(scored_frame(points[25:], state=state))
    assert kinds(second) == [("resolved", "m1", 34)]  # the 5th quiet point
    assert second[0].episode.resolution == "quiet"


def test_a_gap_in_the_data_resolves_quiet_seconds_after_the_last_anomaly():
    points = [("m1", s, 10 <= s < 30) for s in range(30)]
    points += [("m1", s, False) for s in range(200, 210)]  # back after 170 s without data
    tracker = EpisodeTracker(FEATURES, RULE)
    events = tracker.update(scored_frame(points))
    assert kinds(events) == [("opened", "m1", 12), ("resolved", "m1", 89)]
    assert events[1].episode.resolution == "timeout"


def test_a_machine_that_goes_silent_resolves_by_data_time_not_wall_clock():
    points = [("m1", s, s >= 10) for s in range(20)] + [("m2", s, False) for s in range(200)]
    tracker = EpisodeTracker(FEATURES, RULE)
    events = tracker.update(scored_frame(points))
    assert kinds(events) == [("opened", "m1", 12), ("resolved", "m1", 79)]
    assert events[1].episode.resolution == "timeout"


def test_points_after_a_long_gap_start_a_new_episode():
    points = [("m1", s, 10 <= s < 20) for s in range(20)]
    points += [("m1", s, True) for s in range(500, 520)]
    tracker = EpisodeTracker(FEATURES, RULE, cooldown_seconds=0.0)
    frame = scored_frame(points)
    events = tracker.update(frame.iloc[:20]) + tracker.update(frame.iloc[20:], now=T0 + 519 * S)
    assert kinds(events) == [
        ("opened", "m1", 12),
        ("resolved", "m1", 79),
        ("opened", "m1", 500),
    ]
    assert events[1].episode.resolution == "timeout"


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=40),
        min_size=1,
        max_size=3,
    ),
    st.integers(0, 400),
    st.sampled_from([0.0, 20.0, 200.0]),
)
def test_episodes_are_the_same_in_one_run_or_two_with_saved_state(seqs, cut, cooldown):
    points = []
    for m, seq in enumerate(seqs):
        t = 0
        for gap, up in seq:
            t += gap
            points.append((f"m{m}", t, up))
    frame = scored_frame(points)
    one = EpisodeTracker(FEATURES, RULE, cooldown_seconds=cooldown)
    expected = one.update(frame)
    expected += one.update(frame.iloc[:0], now=T0 + 10_000 * S)

    cut_time = pd.Timestamp(T0 + cut * S, tz="UTC")
    two = EpisodeTracker(FEATURES, RULE, cooldown_seconds=cooldown)
    got = two.update(frame[frame["time"] < cut_time], now=cut_time)
    two = EpisodeTracker.from_json(json.loads(json.dumps(two.to_json())))
    got += two.update(frame[frame["time"] >= cut_time])
    got += two.update(frame.iloc[:0], now=T0 + 10_000 * S)

    assert [e.to_dict() for e in got] == [e.to_dict() for e in expected]
    for machine in {p[0] for p in points}:
        mine = [e for e in expected if e.episode.machine == machine]
        opened = [e.episode.episode_id for e in mine if e.kind == "opened"]
        resolved = [e.episode.episode_id for e in mine if e.kind == "resolved"]
        assert len(opened) == len(set(opened)) and set(resolved) <= set(opened)


def test_every_row_of_an_episode_carries_its_id_and_others_none():
    fault = {*range(10, 20), *range(300, 320)}
    points = [("m1", s, s in fault) for s in range(400)] + [("m2", s, False) for s in range(400)]
    frame = scored_frame(points).sample(frac=1.0, random_state=3)  # any row order
    tracker = EpisodeTracker(FEATURES, RULE, cooldown_seconds=0.0)
    update = tracker.follow(frame)
    assert update.events == EpisodeTracker(FEATURES, RULE, cooldown_seconds=0.0).update(frame)
    ids = update.episode_ids
    assert ids.index.equals(frame.index)
    opened = [e.episode.episode_id for e in update.events if e.kind == "opened"]
    inside = frame["in_episode"].astype(bool)
    assert set(ids[inside]) == set(opened) and len(opened) == 2
    assert ids[~inside].isna().all()
    first = frame[inside & (frame["seconds"] < 100)]
    assert set(ids[first.index]) == {episode_id("m1", T0 + 12 * S)}
