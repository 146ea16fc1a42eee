"""Gaps are not faults: after a gap in a machine's data (a restart, a network loss) longer than
`gap_seconds`, nothing compares the first reading with the one before the gap."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetwatch.detector import DetectorConfig, FleetDetector
from fleetwatch.refractory import GAP_HOLD, Refractory
from fleetwatch.state import FleetState
from fleetwatch.views import FIT_SETTLE, VIEWS, FeatureViews, ViewSettings
from machine_simulator.signals import Fleet, Outage, simulate

CHANGE = VIEWS.index("change")
FIT = VIEWS.index("fit")


def level_jump(gap_seconds: float, seed: int = 3) -> pd.DataFrame:
    """Ten minutes of a noisy level, `gap_seconds` without data, then the level 4 sd higher."""
    rng = np.random.default_rng(seed)
    before = pd.date_range("2024-01-01", periods=600, freq="s", tz="UTC")
    after = before[-1] + pd.Timedelta(seconds=gap_seconds) + pd.to_timedelta(range(60), "s")
    values = np.r_[10 + rng.normal(0, 0.5, 600), 12 + rng.normal(0, 0.5, 60)]
    return pd.DataFrame({"unique_id": "m1", "time": [*before, *after], "value": values})


def test_the_first_reading_after_a_gap_is_not_a_step() -> None:
    views = FeatureViews(ViewSettings(), n_features=1)
    views.add_models(1)
    x = np.r_[np.tile([10.0, 11.0], 300), 30.0][:, None]
    rows = np.zeros(len(x), np.intp)
    gap = np.zeros(len(x), bool)
    gap[-1] = True
    _, z, _ = views.transform(rows, x, after_gap=gap)
    assert z[-1, 0, CHANGE] == 0.0  # the jump to 30 is not compared with 11
    assert z[-1, 0, VIEWS.index("level")] > 10  # but its level is still judged

    continuous = FeatureViews(ViewSettings(), n_features=1)
    continuous.add_models(1)
    _, z, _ = continuous.transform(rows, x)
    assert z[-1, 0, CHANGE] > 10  # without the gap it is a step


def test_a_jump_in_level_after_a_gap_scores_lower_than_the_same_jump_at_once() -> None:
    config = DetectorConfig(features=("value",))
    assert config.gap_seconds == 10.0
    at_once = FleetDetector(config).score_frame(level_jump(1)).iloc[600]
    after_gap = FleetDetector(config).score_frame(level_jump(60)).iloc[600]
    assert after_gap["score"] < 0.4 < at_once["score"]
    never = DetectorConfig(features=("value",), gap_seconds=None)
    assert FleetDetector(never).score_frame(level_jump(60)).iloc[600]["score"] > 0.4


def test_a_slow_series_has_no_gap_at_every_reading_and_a_split_finds_the_same_gaps() -> None:
    """Readings every 5 minutes (NAB's series) are not gaps; a gap is relative to the interval
    before it, carried with the state, so a stream split across runs gives the same scores."""
    slow = level_jump(0).assign(time=lambda f: pd.date_range("2024-01-01", periods=len(f),
                                                              freq="5min", tz="UTC"))  # fmt: skip
    config = DetectorConfig(features=("value",))
    gapless = DetectorConfig(features=("value",), gap_seconds=None)
    np.testing.assert_array_equal(
        FleetDetector(config).score_frame(slow)["score"],
        FleetDetector(gapless).score_frame(slow)["score"],
    )
    stream = level_jump(60)
    whole = FleetDetector(config).score_frame(stream)["score"].to_numpy()
    for cut in (300, 600, 601, 630):
        split = FleetDetector(config)
        parts = [split.score_frame(stream.iloc[:cut]), split.score_frame(stream.iloc[cut:])]
        got = pd.concat(parts)["score"].to_numpy()
        # equal up to rounding (the refractory memory is carried in log space)
        np.testing.assert_allclose(got, whole, rtol=1e-12, atol=1e-12, err_msg=str(cut))


def test_the_fit_view_waits_for_its_lags_after_a_gap() -> None:
    views = FeatureViews(ViewSettings(), n_features=2, driver=0)
    views.add_models(1)
    t = np.arange(1200.0)
    load = 75 + 17 * np.sin(2 * np.pi * t / 120)
    lagged = np.zeros_like(load)
    for k in range(1, len(t)):  # temperature follows load with a 45 s lag
        lagged[k] = lagged[k - 1] + (1 - np.exp(-1 / 45)) * (load[k] - lagged[k - 1])
    x = np.column_stack([load, 28 + 0.12 * lagged])
    keep = np.r_[np.arange(600), np.arange(660, 1200)]  # a minute without data
    gap = np.zeros(len(keep), bool)
    gap[600] = True
    _, z, _ = views.transform(np.zeros(len(keep), np.intp), x[keep], after_gap=gap)
    assert (z[600 : 600 + FIT_SETTLE, 1, FIT] == 0).all()
    assert np.abs(z[600:, 1, FIT]).max() < 5  # no alarm once it speaks again


def test_a_restarted_simulator_gives_no_episode() -> None:
    """The simulator restarted after 30 s and 120 s: its readings go on smoothly and the
    detector sees the gap as a gap."""
    t0 = 1_700_001_994.0

    def readings(start: float, seconds: int) -> pd.DataFrame:
        fleet = Fleet(3, seed=1)
        rows = [
            {"time": pd.Timestamp(round((start + k) * 1e9), tz="UTC"), "unique_id": r.machine_id,
             **r.values()}
            for k in range(seconds)
            for r in fleet.step(start + k)
        ]  # fmt: skip
        return pd.DataFrame(rows)

    for gap in (30, 120):
        state = FleetState.new()
        state.process(readings(t0, 1200))
        _, events = state.process(readings(t0 + 1200 + gap, 300))
        assert events == [], gap


def cooled_restart(stop_for: int = 120, shift: float = 15.0, seed: int = 3) -> pd.DataFrame:
    """Half an hour of a work cycle (load, and a temperature following it with a 45 s lag),
    then a stop of `stop_for` s (load 0: the machine cools; no readings) and a restart at a
    work level `shift` higher: what a restart looks like in the simulator's `restarts`."""
    rng = np.random.default_rng(seed)
    stop_at, n = 1800, 1800 + stop_for + 900
    t = np.arange(n, dtype=float)
    load = 75 + 17 * np.sin(2 * np.pi * t / 120) + rng.normal(0, 0.8, n)
    load[stop_at + stop_for :] += shift
    load[stop_at : stop_at + stop_for] = 0.0
    lagged = np.empty(n)
    state = 75.0
    for k in range(n):
        state += (1 - np.exp(-1 / 45)) * (load[k] - state)
        lagged[k] = state
    temperature = 28 + 0.12 * lagged + rng.normal(0, 0.05, n)
    keep = np.r_[np.arange(stop_at), np.arange(stop_at + stop_for, n)]
    times = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(t[keep], "s")
    return pd.DataFrame(
        {"unique_id": "m1", "time": times, "load": load[keep], "temperature": temperature[keep]}
    )


def test_a_restart_of_a_cooled_machine_gives_no_episode() -> None:
    """The temperature comes back 8 degrees below what the load predicts (50 deviations of
    the fit's residual); after three lags it is still 5 deviations off, so the fit waits
    until the error has faded below the noise, and the score stays below the threshold."""
    frame = cooled_restart()
    detector = FleetDetector(DetectorConfig(features=("load", "temperature")))
    scored = pd.concat(
        [detector.score_frame(frame.iloc[i : i + 60]) for i in range(0, len(frame), 60)]
    )
    after = scored.iloc[1800:]
    assert not scored["episode_start"].any()
    fit = after["dev_view_temperature"] == "fit"
    assert after.loc[fit, "dev_temperature"].abs().max() < detector.config.z_alarm
    assert (after["score"] > detector.config.threshold).mean() < 0.01


def test_the_warm_up_after_a_restart_is_not_news() -> None:
    """The simulator's restarts: each machine stops for a minute or two and comes back cooler,
    at another work level; its fast sensors catch up within seconds, each reading a step the
    machine has not just shown. None of those first readings scores above the threshold."""
    t0 = 1_700_000_000.0
    mids = list(Fleet(3, seed=0).machines)
    outages = [
        Outage(m, t0 + 1500 + 7 * i, t0 + 1590 + 7 * i, 13.0 if i % 2 else -13.0)
        for i, m in enumerate(mids)
    ]
    fleet = Fleet(3, seed=0, outages=outages)
    rows = [
        {"time": pd.Timestamp(round(r.time * 1e9), tz="UTC"), "unique_id": r.machine_id,
         **r.values()}
        for readings in simulate(fleet, t0, 1.0, 1800)
        for r in readings
    ]  # fmt: skip
    frame = pd.DataFrame(rows)
    detector = FleetDetector(DetectorConfig())
    scored = pd.concat(
        [detector.score_frame(frame.iloc[i : i + 180]) for i in range(0, len(frame), 180)]
    )
    seconds = scored["time"].astype("int64") / 1e9 - t0
    for outage in outages:
        mine = scored[(scored["unique_id"] == outage.machine_id) & (seconds >= outage.end - t0)]
        assert len(mine) > GAP_HOLD
        assert (mine["score"].iloc[:GAP_HOLD] <= detector.config.threshold).all()
    assert not scored["episode_start"].any()


def test_the_hold_after_a_gap_is_carried_across_runs() -> None:
    """The readings held after a gap are the same whether the stream is split or not."""
    surprise = np.r_[np.full(5, 1.0), np.arange(20.0, 40.0)]
    gap = np.zeros(len(surprise), bool)
    gap[5] = True
    whole = Refractory(half_life=20.0)
    whole.add_models(1)
    news, _ = whole.discount(np.zeros(len(surprise), np.intp), np.array([0]), surprise, gap)
    assert (news[5 : 5 + GAP_HOLD] == 0).all() and (news[5 + GAP_HOLD :] > 0).all()
    for cut in (6, 9, 5 + GAP_HOLD):
        split = Refractory(half_life=20.0)
        split.add_models(1)
        got = []
        for part in (slice(0, cut), slice(cut, None)):
            n = len(surprise[part])
            part_news, after = split.discount(
                np.zeros(n, np.intp), np.array([0]), surprise[part], gap[part]
            )
            split.commit(np.array([0]), after[-1:])
            got.append(part_news)
        np.testing.assert_allclose(np.concatenate(got), news, rtol=1e-12, err_msg=str(cut))
