"""fleetwatch.detector: the documented rules, checked against River point by point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detection_eval.river_engine import RiverEngine
from fleetwatch.detector import DetectorConfig, FleetDetector
from tests.fleetwatch.reference import naive_detector

T0 = pd.Timestamp("2024-03-01", tz="UTC")
LIMITS = {"load": (0.0, 250.0), "power": (0.0, 600.0)}
CONFIG = DetectorConfig(  # the raw mode: one model over the scaled values, River-checkable
    features=("load", "power"),
    views=(),
    stat_views=(),
    news_views=(),
    limits=LIMITS,
    n_trees=10,
    height=5,
    window_size=50,
    persistence=3,
    quiet_points=5,
    quiet_seconds=60.0,
)
FLAGS = ["is_anomaly", "in_episode", "episode_start", "episode_end", "learned"]


def telemetry(machines: int, seconds: int, faults=(), seed: int = 0) -> pd.DataFrame:
    """Healthy machines at 1 Hz; `faults` are (machine, start, stop) overloads."""
    rng = np.random.default_rng(seed)
    frames = []
    for m in range(machines):
        t = np.arange(seconds)
        load = 75 + 20 * np.sin(2 * np.pi * t / 120 + m) + rng.normal(0, 3, seconds)
        power = 200 + 0.3 * load + rng.normal(0, 2, seconds)
        for machine, start, stop in faults:
            if machine == m:
                load[start:stop], power[start:stop] = 200 + rng.normal(0, 2, stop - start), 460
        frames.append(
            pd.DataFrame(
                {
                    "unique_id": f"machine{m}",
                    "time": T0 + pd.to_timedelta(t, unit="s"),
                    "load": load.round(1),
                    "power": power.round(1),
                }
            )
        )
    return (
        pd.concat(frames).sort_values(["time", "unique_id"], kind="stable").reset_index(drop=True)
    )


@pytest.mark.parametrize("learn_anomalies", [False, True])
def test_detector_equals_river_point_by_point_across_frames(learn_anomalies):
    config = DetectorConfig(**{**CONFIG.to_json(), "learn_anomalies": learn_anomalies})
    data = telemetry(3, 400, faults=[(1, 150, 260), (2, 300, 305)])
    cuts = [0, 1, 2, 100, 431, 900, len(data)]
    frames = [data.iloc[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    detector = FleetDetector(config)
    got = pd.concat([detector.score_frame(f) for f in frames])
    expected = naive_detector(frames, config).loc[got.index]
    assert np.abs(got["score"].to_numpy() - expected["score"].to_numpy()).max() <= 1e-12
    for name in FLAGS:
        assert (got[name].to_numpy() == expected[name].to_numpy()).all(), name
    assert got["is_anomaly"].sum() > 0 and (got["status"] == "scored").all()


def test_river_engine_gives_the_same_frame():
    data = telemetry(2, 300, faults=[(0, 120, 200)])
    a = FleetDetector(CONFIG).score_frame(data)
    b = FleetDetector(CONFIG, engine=RiverEngine).score_frame(data)
    pd.testing.assert_frame_equal(a, b)


def test_a_sustained_fault_stays_anomalous_unless_anomalies_are_learned():
    data = telemetry(1, 700, faults=[(0, 200, 600)])
    kept = FleetDetector(CONFIG).score_frame(data)
    fault = kept.iloc[205:600]
    assert fault["is_anomaly"].all() and fault["in_episode"].all()
    assert not fault["learned"].any()
    assert kept.iloc[605:]["in_episode"].sum() <= CONFIG.quiet_points
    assert kept["episode_start"].sum() == 1 and kept["episode_end"].sum() == 1

    learning = DetectorConfig(**{**CONFIG.to_json(), "learn_anomalies": True})
    forgot = FleetDetector(learning).score_frame(data).iloc[205:600]
    assert forgot["episode_end"].any()  # the upstream weakness: the fault became normal
    assert forgot["is_anomaly"].mean() < 0.5


def test_no_anomaly_before_the_first_window_is_full():
    data = telemetry(1, 120, faults=[(0, 10, 120)])
    scored = FleetDetector(CONFIG).score_frame(data)
    first = scored.iloc[: CONFIG.window_size]
    assert (first["score"] == 0).all() and not first["warm"].any()
    assert not first["is_anomaly"].any()
    assert scored.iloc[CONFIG.window_size :]["warm"].all()


def test_frames_split_anywhere_score_like_one_frame():
    data = telemetry(4, 300, faults=[(3, 100, 200)])
    whole = FleetDetector(CONFIG).score_frame(data)
    detector = FleetDetector(CONFIG)
    parts = [detector.score_frame(data.iloc[a : a + 97]) for a in range(0, len(data), 97)]
    pd.testing.assert_frame_equal(pd.concat(parts), whole)


def test_row_order_does_not_matter():
    data = telemetry(3, 200, faults=[(1, 90, 150)])
    expected = FleetDetector(CONFIG).score_frame(data)
    shuffled = data.sample(frac=1.0, random_state=4)
    got = FleetDetector(CONFIG).score_frame(shuffled)
    pd.testing.assert_frame_equal(got.loc[expected.index], expected)


def test_stale_and_duplicate_points_are_skipped_and_counted():
    data = telemetry(2, 120)
    detector = FleetDetector(CONFIG)
    detector.score_frame(data.iloc[:150])
    again = pd.concat([data.iloc[100:180], data.iloc[170:175]])  # overlap + duplicates
    scored = detector.score_frame(again)
    status = scored["status"].to_numpy()
    assert (status[:50] == "stale").all()  # already processed in the first call
    assert (status[50:80] == "scored").all()
    assert (status[80:] == "stale").all()  # duplicates of rows just scored
    assert scored.loc[status == "stale", "score"].isna().all()
    assert detector.skipped["stale"] == 55
    assert detector.watermark == data.iloc[:180]["time"].max()
    reference = FleetDetector(CONFIG).score_frame(data.iloc[:180])
    np.testing.assert_array_equal(
        scored["score"].to_numpy()[50:80], reference["score"].to_numpy()[150:180]
    )


def test_missing_values_take_the_last_value_and_points_without_one_are_skipped():
    data = telemetry(1, 200)
    holes = data.copy()
    holes.loc[[0, 1], "power"] = np.nan  # nothing to fill from yet
    holes.loc[[60, 61, 62], "load"] = np.nan
    scored = FleetDetector(CONFIG).score_frame(holes)
    assert list(scored["status"].iloc[:3]) == ["missing", "missing", "scored"]
    filled = data.copy()
    filled.loc[[60, 61, 62], "load"] = data.loc[59, "load"]
    reference = FleetDetector(CONFIG).score_frame(filled.iloc[2:])
    np.testing.assert_array_equal(scored["score"].to_numpy()[2:], reference["score"].to_numpy())
    assert np.isnan(scored.loc[61, "load"])  # the output keeps the data as it came


def test_a_feature_column_missing_from_a_frame_is_filled_per_machine():
    data = telemetry(2, 120)
    detector = FleetDetector(CONFIG)
    detector.score_frame(data.iloc[:100])
    later = data.iloc[100:].drop(columns=["power"])
    later.loc[later.index[[0, 2]], "unique_id"] = "machine9"  # a new machine without power
    scored = detector.score_frame(later)
    assert list(scored["status"].iloc[[0, 2]]) == ["missing", "missing"]
    assert (scored["status"].drop(index=later.index[[0, 2]]) == "scored").all()
    assert "machine9" in detector.machines


def test_a_flat_signal_is_normal_and_a_step_out_of_it_is_not():
    times = T0 + pd.to_timedelta(np.arange(200), unit="s")
    flat = pd.DataFrame({"unique_id": "m", "time": times, "load": 80.0, "power": 210.0})
    flat.loc[150:, "power"] = 420.0
    for limits in (LIMITS, None):  # seed 2: trees that split power early (seed 1 scores 0.7)
        config = DetectorConfig(**{**CONFIG.to_json(), "limits": limits, "seed": 2})
        scored = FleetDetector(config).score_frame(flat)
        assert scored["score"].notna().all()
        assert not scored.iloc[:150]["is_anomaly"].any()
        assert scored.iloc[152:]["is_anomaly"].any()
        assert scored.loc[152, "dev_power"] > 0 and scored.loc[152, "dev_load"] == 0


def test_deviation_names_the_features_that_moved():
    data = telemetry(1, 300, faults=[(0, 200, 260)])
    scored = FleetDetector(CONFIG).score_frame(data)
    assert scored.iloc[: CONFIG.window_size][["dev_load", "dev_power"]].isna().all().all()
    peak = scored.iloc[210]
    assert peak["dev_load"] > 0.3 and peak["dev_power"] > 0.3


def test_online_scaling_frames_split_anywhere_score_like_one_frame():
    config = DetectorConfig(**{**CONFIG.to_json(), "limits": None})
    data = telemetry(3, 200, faults=[(0, 120, 160)])
    whole = FleetDetector(config).score_frame(data)
    detector = FleetDetector(config)
    parts = [detector.score_frame(data.iloc[a : a + 71]) for a in range(0, len(data), 71)]
    pd.testing.assert_frame_equal(pd.concat(parts), whole)


def test_bad_input_is_a_clear_error_and_bad_rows_are_kept():
    detector = FleetDetector(CONFIG)
    with pytest.raises(KeyError, match="unique_id"):
        detector.score_frame(pd.DataFrame({"time": [T0], "load": [1.0], "power": [1.0]}))
    with pytest.raises(ValueError, match="numeric"):
        detector.score_frame(
            pd.DataFrame({"unique_id": ["m"], "time": [T0], "load": ["x"], "power": [1]})
        )
    frame = pd.DataFrame(
        {"unique_id": ["m", None, "m"], "time": [T0, T0, None], "load": 1.0, "power": 1.0}
    )
    scored = detector.score_frame(frame)
    assert list(scored["status"]) == ["scored", "bad_key", "bad_time"]
    assert detector.machines == ["m"]
