"""fleetwatch.episodes: the alarm rule against a per-point loop, and episode events."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwatch.episodes import AlarmRule, AlarmState, EpisodeEvent, EpisodeTracker, episode_id
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


def tracker(**settings) -> EpisodeTracker:
    """A tracker with RULE; `recur_gap_seconds=0` makes every burst its own episode."""
    return EpisodeTracker(FEATURES, RULE, **settings)


def test_a_single_spike_is_not_an_episode():
    points = [("m1", s, s == 10) for s in range(40)]
    episodes = tracker()
    assert episodes.update(scored_frame(points)) == []
    assert episodes.open == {}


def test_a_sustained_fault_opens_once_and_resolves_once():
    points = [("m1", s, 100 <= s < 200) for s in range(260)]
    events = tracker(recur_gap_seconds=0).update(scored_frame(points))
    assert kinds(events) == [("opened", "m1", 102), ("resolved", "m1", 204)]
    opened, resolved = (e.episode for e in events)
    assert opened.episode_id == resolved.episode_id == episode_id("m1", T0 + 102 * S)
    assert (resolved.start - T0) // S == 102 and (resolved.end - T0) // S == 199
    assert resolved.resolution == "quiet" and resolved.points == 98 and resolved.bursts == 1
    assert resolved.peak_values == {"load": 200.0, "power": 210.0}
    assert resolved.top_features == ["load"]
    assert resolved.peak_score == max(0.9 + s * 1e-6 for s in range(102, 200))
    assert (opened.status, resolved.status) == ("open", "resolved")


def test_it_resolves_after_the_recur_gap_has_passed_quietly():
    points = [("m1", s, 100 <= s < 200) for s in range(900)]
    episodes = tracker(recur_gap_seconds=600)
    frame = scored_frame(points)
    first = episodes.update(frame[frame["seconds"] < 700])
    assert kinds(first) == [("opened", "m1", 102)]  # quiet since 199, but not for 600 s yet
    assert kinds(episodes.update(frame[frame["seconds"] >= 700])) == [("resolved", "m1", 799)]


def test_bursts_closer_than_the_recur_gap_are_one_story():
    fault = {*range(10, 20), *range(40, 50), *range(70, 80), *range(300, 400)}
    points = [("m1", s, s in fault) for s in range(1000)]
    update = tracker(recur_gap_seconds=120).follow(scored_frame(points))
    # 10-79 are three bursts, each less than 120 s after the last: one story, resolved 120 s
    # after its last anomalous point; 300-399 starts 221 s later: a new story.
    assert kinds(update.events) == [
        ("opened", "m1", 12),
        ("resolved", "m1", 199),
        ("opened", "m1", 302),
        ("resolved", "m1", 519),
    ]
    first = update.events[1].episode
    assert first.bursts == 3 and first.points == 8 + 8 + 8 and (first.end - T0) // S == 79
    assert [e.status for e in update.episodes] == ["resolved", "resolved"]
    inside = update.episode_ids[update.episode_ids.notna()]
    assert inside.nunique() == 2  # every burst's rows carry their story's id


def test_a_recurring_fault_gets_at_most_one_follow_up_per_period():
    bursts = {s for start in range(0, 600, 30) for s in range(start, start + 5)}
    points = [("m1", s, s in bursts) for s in range(900)]
    episodes = tracker(recur_gap_seconds=60, follow_up_seconds=200)
    events = episodes.update(scored_frame(points))
    assert kinds(events) == [
        ("opened", "m1", 2),
        ("recurring", "m1", 212),  # the first burst 200 s or more after the alert
        ("recurring", "m1", 422),
        ("resolved", "m1", 634),
    ]
    ids = {e.episode.episode_id for e in events}
    assert len(ids) == 1
    assert [e.episode.bursts for e in events] == [1, 8, 15, 20]
    assert [e.episode.follow_ups for e in events] == [0, 1, 2, 2]


def test_a_cooldown_holds_an_alert_back_but_never_drops_it():
    fault = {*range(10, 20), *range(40, 50), *range(300, 400)}
    points = [("m1", s, s in fault) for s in range(1000)]
    update = tracker(recur_gap_seconds=0, cooldown_seconds=120).follow(scored_frame(points))
    # 40-49 starts inside the cooldown after the resolution at 24 and ends inside it: it is
    # announced (delayed) as it resolves, not dropped.
    assert kinds(update.events) == [
        ("opened", "m1", 12),
        ("resolved", "m1", 24),
        ("opened", "m1", 54),
        ("resolved", "m1", 54),
        ("opened", "m1", 302),
        ("resolved", "m1", 404),
    ]
    late = update.events[2]
    assert late.delayed and (late.episode.start - T0) // S == 42
    opened = [e.episode.episode_id for e in update.events if e.kind == "opened"]
    assert len(set(opened)) == 3


def test_an_episode_still_open_when_the_cooldown_ends_is_announced_then():
    fault = {*range(10, 20), *range(40, 300)}
    points = [("m1", s, s in fault) for s in range(400)]
    episodes = tracker(recur_gap_seconds=0, cooldown_seconds=120)
    frame = scored_frame(points)
    held = episodes.follow(frame[frame["seconds"] < 100])
    assert [e.status for e in held.episodes] == ["resolved", "held"]
    events = held.events + episodes.update(frame[frame["seconds"] >= 100])
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
    episodes = tracker(recur_gap_seconds=0)
    state = AlarmState()  # one alarm state across both frames, as the detector keeps it
    state.add_models(1)
    first = episodes.update(scored_frame(points[:25], state=state))
    assert kinds(first) == [("opened", "m1", 12)]
    second = episodes.update(scored_frame(points[25:], state=state))
    assert kinds(second) == [("resolved", "m1", 34)]  # the 5th quiet point
    assert second[0].episode.resolution == "quiet"


def test_a_gap_in_the_data_resolves_quiet_seconds_after_the_last_anomaly():
    points = [("m1", s, 10 <= s < 30) for s in range(30)]
    points += [("m1", s, False) for s in range(200, 210)]  # back after 170 s without data
    events = tracker(recur_gap_seconds=0).update(scored_frame(points))
    assert kinds(events) == [("opened", "m1", 12), ("resolved", "m1", 89)]
    assert events[1].episode.resolution == "timeout"


def test_a_machine_that_goes_silent_resolves_by_data_time_not_wall_clock():
    points = [("m1", s, s >= 10) for s in range(20)] + [("m2", s, False) for s in range(800)]
    assert kinds(tracker(recur_gap_seconds=0).update(scored_frame(points))) == [
        ("opened", "m1", 12),
        ("resolved", "m1", 79),  # quiet_seconds after its last point
    ]
    events = tracker(recur_gap_seconds=600).update(scored_frame(points))
    assert kinds(events) == [("opened", "m1", 12), ("resolved", "m1", 619)]
    assert events[1].episode.resolution == "timeout"


def test_points_after_a_gap_join_the_story_or_start_a_new_one():
    points = [("m1", s, 10 <= s < 20) for s in range(20)]
    points += [("m1", s, True) for s in range(500, 520)]
    frame = scored_frame(points)
    alone = tracker(recur_gap_seconds=0)
    events = alone.update(frame.iloc[:20]) + alone.update(frame.iloc[20:], now=T0 + 519 * S)
    assert kinds(events) == [("opened", "m1", 12), ("resolved", "m1", 79), ("opened", "m1", 500)]
    assert events[1].episode.resolution == "timeout"

    story = tracker(recur_gap_seconds=600)
    events = story.update(frame.iloc[:20]) + story.update(frame.iloc[20:], now=T0 + 519 * S)
    assert kinds(events) == [("opened", "m1", 12)]  # 481 s later: the same fault, recurring
    assert story.open["m1"].bursts == 2


def test_events_and_episodes_survive_json():
    fault = {*range(10, 20), *range(40, 50)}
    update = tracker(recur_gap_seconds=60).follow(
        scored_frame([("m1", s, s in fault) for s in range(200)])
    )
    for event in update.events:
        again = EpisodeEvent.from_dict(json.loads(json.dumps(event.to_dict())))
        assert again == event
    assert update.events[-1].to_dict()["status"] == "resolved"


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=40),
        min_size=1,
        max_size=3,
    ),
    st.integers(0, 400),
    st.sampled_from([0.0, 20.0, 200.0]),
    st.sampled_from([0.0, 30.0, 300.0]),
    st.sampled_from([0.0, 50.0]),
)
def test_episodes_are_the_same_in_one_run_or_two_with_saved_state(
    seqs, cut, cooldown, recur_gap, follow_up
):
    points = []
    for m, seq in enumerate(seqs):
        t = 0
        for gap, up in seq:
            t += gap
            points.append((f"m{m}", t, up))
    frame = scored_frame(points)
    options = {
        "cooldown_seconds": cooldown,
        "recur_gap_seconds": recur_gap,
        "follow_up_seconds": follow_up,
    }
    one = tracker(**options)
    expected = one.update(frame)
    expected += one.update(frame.iloc[:0], now=T0 + 10_000 * S)

    cut_time = pd.Timestamp(T0 + cut * S, tz="UTC")
    two = tracker(**options)
    got = two.update(frame[frame["time"] < cut_time], now=cut_time)
    two = EpisodeTracker.from_json(json.loads(json.dumps(two.to_json())))
    got += two.update(frame[frame["time"] >= cut_time])
    got += two.update(frame.iloc[:0], now=T0 + 10_000 * S)

    assert [e.to_dict() for e in got] == [e.to_dict() for e in expected]
    assert one.open == two.open == {}
    for machine in {p[0] for p in points}:
        mine = [e for e in expected if e.episode.machine == machine]
        opened = [e.episode.episode_id for e in mine if e.kind == "opened"]
        resolved = [e.episode.episode_id for e in mine if e.kind == "resolved"]
        assert len(opened) == len(set(opened)) and sorted(resolved) == sorted(opened)
        for event in mine:  # every follow-up and all-clear comes after its alert
            assert event.kind == "opened" or event.episode.episode_id in opened


def test_every_row_of_a_story_carries_its_id_and_others_none():
    fault = {*range(10, 20), *range(300, 320)}
    points = [("m1", s, s in fault) for s in range(400)] + [("m2", s, False) for s in range(400)]
    frame = scored_frame(points).sample(frac=1.0, random_state=3)  # any row order
    for gap, stories in ((0.0, 2), (600.0, 1)):
        update = tracker(recur_gap_seconds=gap).follow(frame)
        assert update.events == tracker(recur_gap_seconds=gap).update(frame)
        ids = update.episode_ids
        assert ids.index.equals(frame.index)
        opened = [e.episode.episode_id for e in update.events if e.kind == "opened"]
        inside = frame["in_episode"].astype(bool)
        assert set(ids[inside]) == set(opened) and len(opened) == stories
        assert ids[~inside].isna().all()
        first = frame[inside & (frame["seconds"] < 100)]
        assert set(ids[first.index]) == {episode_id("m1", T0 + 12 * S)}
