"""fleetwatch.seasonal and the detector on daily patterns: the usual day is expected, a
deviation from it is not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fleetwatch.detector import DetectorConfig, FleetDetector
from fleetwatch.seasonal import DAY_NS, MIN_DAYS, DailyProfile

FIVE_MIN = pd.Timedelta("5min")


def daily_pattern(days: int, noise: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """High by day (08:00-18:00 UTC), low by night, 5-minute readings."""
    times = pd.date_range("2024-01-01", periods=days * 288, freq=FIVE_MIN, tz="UTC")
    hour = times.hour + times.minute / 60
    value = np.where((hour >= 8) & (hour < 18), 80.0, 20.0)
    value = value + np.random.default_rng(seed).normal(0, noise, len(times))
    return pd.DataFrame({"unique_id": "m", "time": times, "value": value})


def run_profile(frame: pd.DataFrame) -> tuple[DailyProfile, np.ndarray, np.ndarray]:
    season = DailyProfile(1)
    season.add_models(1)
    t = frame["time"].astype("int64").to_numpy()
    x = frame["value"].to_numpy()
    expected, active = np.zeros(len(x)), np.zeros(len(x), bool)
    previous = np.array([[np.nan]])
    for i in range(len(x)):
        e, a = season.step(
            np.array([0]), t[i : i + 1], x[i : i + 1, None], previous, np.ones((1, 1))
        )
        expected[i], active[i] = e[0, 0], a[0, 0]
        previous = x[i : i + 1, None]
    return season, expected, active


def test_the_profile_learns_the_usual_day_and_becomes_active():
    frame = daily_pattern(6)
    _, expected, active = run_profile(frame)
    ready = ~np.isnan(expected)
    first_ready = np.flatnonzero(ready)[0]
    assert first_ready == MIN_DAYS * 288  # not before two days of history
    late = slice(4 * 288, None)
    assert np.abs(expected[late] - frame["value"].to_numpy()[late]).mean() < 1.5
    assert active[late].all()


def test_the_profile_stays_inactive_without_a_daily_cycle():
    frame = daily_pattern(6)
    frame["value"] = 50 + np.cumsum(np.random.default_rng(1).normal(0, 1, len(frame)))
    _, _, active = run_profile(frame)
    assert not active.any()  # a random walk: yesterday at this time predicts nothing


def test_the_detector_expects_the_daily_edges_and_sees_a_jump_at_an_unusual_time():
    frame = daily_pattern(10)
    anomaly = (frame["time"] >= "2024-01-09 12:00") & (frame["time"] < "2024-01-09 13:00")
    frame.loc[anomaly, "value"] += 40.0  # a jump in the middle of the day
    config = DetectorConfig(features=("value",))
    scores = {}
    for bins in (96, 0):
        scored = FleetDetector(config.__class__(**{**config.to_json(), "season_bins": bins}))
        scores[bins] = scored.score_frame(frame)["score"].to_numpy()
    quiet = (frame["time"] >= "2024-01-05") & (frame["time"] < "2024-01-09")
    jump = np.flatnonzero(anomaly.to_numpy())[0]
    with_profile, without = scores[96], scores[0]
    # With the profile, the regular edges score far below the unusual jump; without it they
    # score like it.
    assert with_profile[quiet.to_numpy()].max() < with_profile[jump] - 0.1
    assert without[quiet.to_numpy()].max() > without[jump] - 0.05
    assert DAY_NS == 86_400 * 10**9


def test_a_stream_split_anywhere_scores_like_one_run_with_the_profile_active():
    frame = daily_pattern(5)
    frame.loc[frame["time"] >= "2024-01-05 10:00", "value"] += 30.0
    config = DetectorConfig(features=("value",), window_size=100)
    whole = FleetDetector(config).score_frame(frame)
    detector = FleetDetector(config)
    parts = [detector.score_frame(frame.iloc[a : a + 173]) for a in range(0, len(frame), 173)]
    pd.testing.assert_frame_equal(pd.concat(parts), whole)
    assert detector.views.season.ms_season[0, 0] < 0.7 * detector.views.season.ms_plain[0, 0]
