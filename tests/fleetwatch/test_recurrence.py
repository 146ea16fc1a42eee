"""fleetwatch.recurrence: a surprise a machine shows at the same time every day stops being news;
the same surprise at a new time of day stays news."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetwatch.detector import DetectorConfig, FleetDetector
from fleetwatch.recurrence import NEIGHBOURS, DailyRecurrence
from fleetwatch.seasonal import DAY_NS

FIVE_MIN = 300 * 10**9


def sequential(times: np.ndarray, surprise: np.ndarray, bins: int, decay: float) -> np.ndarray:
    """The module's rule, one reading at a time: the largest memory over the phase and its
    neighbours, each phase's memory the largest surprise of every earlier day times
    `decay ** (days since - 1)`."""
    seen: dict[tuple[int, int], float] = {}  # (day, phase) -> largest surprise that day
    out = []
    for t, s in zip(times, surprise, strict=True):
        day, phase = int(t // DAY_NS), int((t % DAY_NS) * bins // DAY_NS)
        near = {(phase + k) % bins for k in range(-NEIGHBOURS, NEIGHBOURS + 1)}
        out.append(
            max(
                [v * decay ** (day - d - 1) for (d, p), v in seen.items() if p in near and d < day],
                default=0.0,
            )
        )
        seen[(day, phase)] = max(seen.get((day, phase), 0.0), s)
    return np.array(out)


def test_batches_of_many_machines_split_anywhere_follow_the_sequential_rule():
    rng = np.random.default_rng(3)
    machines, n = 3, 5 * 288  # five days of 5-minute readings, jittered
    times = (
        np.sort(np.arange(n) * FIVE_MIN + rng.integers(0, 60, (machines, n)) * 10**9, axis=1)
        + np.arange(machines)[:, None] * 3_600 * 10**9
    )
    surprise = np.where(rng.random((machines, n)) < 0.1, rng.exponential(8, (machines, n)), 0.0)
    recurrence = DailyRecurrence(bins=288, decay=0.5)
    recurrence.add_models(machines)
    got = np.zeros_like(surprise)
    for a, b in [(0, 1), (1, 200), (200, 777), (777, 778), (778, n)]:  # 777 readings: 2.7 days
        rows = np.repeat(np.arange(machines), b - a)
        t, s = times[:, a:b].ravel(), surprise[:, a:b].ravel()
        got[:, a:b] = recurrence.baseline(rows, t, s).reshape(machines, b - a)
        recurrence.learn(rows, t, s)
    expected = np.stack([sequential(times[m], surprise[m], 288, 0.5) for m in range(machines)])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert (expected > 0).mean() > 0.2  # the rule was exercised


def test_bad_settings_and_state_are_clear_errors():
    with pytest.raises(ValueError, match="bins"):
        DailyRecurrence(bins=0)
    with pytest.raises(ValueError, match="decay"):
        DailyRecurrence(decay=1.0)
    recurrence = DailyRecurrence(bins=96)
    with pytest.raises(ValueError, match=r"\(machines, 96\)"):
        recurrence.restore({name: np.zeros((2, 288)) for name in DailyRecurrence.STATE})


def nightly_job(days: int, seed: int = 0) -> pd.DataFrame:
    """A noisy 5-minute series with a burst at 03:00-03:10 UTC every night."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=days * 288, freq="5min", tz="UTC")
    value = 20 + rng.normal(0, 1, len(times))
    burst = (times.hour == 3) & (times.minute < 10)
    value[burst] += 25.0
    return pd.DataFrame({"unique_id": "db1", "time": times, "value": value})


def peaks(frame: pd.DataFrame, scores: np.ndarray, hour: int) -> list[float]:
    """The highest score of each day within the hour starting at `hour`."""
    at = frame["time"].dt.hour.to_numpy() == hour
    days = frame["time"].dt.day.to_numpy()
    return [round(float(scores[at & (days == d)].max()), 3) for d in np.unique(days[at])]


def test_a_nightly_burst_is_news_on_its_first_night_and_routine_after_yet_a_new_one_is_news():
    frame = nightly_job(8)
    new = (frame["time"] >= "2024-01-07 15:00") & (frame["time"] < "2024-01-07 15:10")
    frame.loc[new, "value"] += 25.0  # the same burst at a time of day never seen before
    scores = {}
    for bins in (288, 0):
        config = DetectorConfig(features=("value",), recurrence_bins=bins)
        scores[bins] = FleetDetector(config).score_frame(frame)["score"].to_numpy()
    routine, without = peaks(frame, scores[288], 3), peaks(frame, scores[0], 3)
    # Night 1 is warm-up (the trees' first window); night 2 is the first the detector scores.
    assert routine[1] == without[1] > 0.95  # the first burst it sees is news either way
    # From the fifth night on only the statistical band is left (a level past z_alarm: at
    # most 0.85, below the news); without the recurrence each night is news again.
    band_top = config.threshold + config.stat_band * (1 - config.threshold)
    assert max(routine[4:]) <= band_top < 0.88 < min(without[4:])
    # A burst at a new time of day is news, as much as without the recurrence (it is the
    # second time the detector sees such a burst, so less than the first).
    new_time = peaks(frame, scores[288], 15)[6]
    assert new_time > band_top and abs(new_time - peaks(frame, scores[0], 15)[6]) < 0.05


def test_the_memory_survives_a_saved_state_and_the_run_goes_on_as_one():
    frame = nightly_job(5)
    config = DetectorConfig(features=("value",))
    whole = FleetDetector(config).score_frame(frame)
    first = FleetDetector(config)
    head = first.score_frame(frame.iloc[:1000])
    restored = FleetDetector.from_state(first.meta(), first.arrays())
    assert restored.recurrence.today.any()
    tail = restored.score_frame(frame.iloc[1000:])
    pd.testing.assert_frame_equal(pd.concat([head, tail]), whole)
