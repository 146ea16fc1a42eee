"""Splitting and merging states by machine: every machine scores as it did in the whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetwatch.detector import DetectorConfig
from fleetwatch.partition import merge, take
from fleetwatch.state import FleetState

FEATURES = ("load", "vibration", "power", "temperature")
MACHINES = [f"m{i}" for i in range(7)]


def telemetry(start: int, seconds: int, fault: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    times = pd.date_range(pd.Timestamp(start, unit="s", tz="UTC"), periods=seconds, freq="1s")
    n = len(MACHINES)
    frame = pd.DataFrame(
        {
            "time": np.repeat(times, n),
            "unique_id": np.tile(MACHINES, seconds),
            **{f: 50 + rng.normal(0, 1, seconds * n) for f in FEATURES},
        }
    )
    if fault is not None:  # a sustained overload: opens an episode that stays open
        frame.loc[frame["unique_id"] == fault, "load"] += 40
    return frame


def warmed() -> FleetState:
    state = FleetState.new()
    state.process(telemetry(1_700_000_000, 320))
    state.process(telemetry(1_700_000_320, 30, fault="m3"))
    state.extra["machines"] = {m: [m, "acme"] for m in MACHINES}
    state.extra["note"] = "kept"
    state.extra["checks"] = {"version": 1, "checks": {"hot": {}}}  # about the whole fleet
    return state


def scores(state: FleetState, frame: pd.DataFrame) -> pd.DataFrame:
    scored, _ = state.process(frame)
    return scored.set_index(["unique_id", "time"])[["score", "is_anomaly", "in_episode"]]


def test_parts_and_their_merge_score_like_the_whole() -> None:
    whole = warmed()
    assert whole.episodes.open, "the fixture should hold an open episode"
    groups = [["m3", "m0", "m6"], ["m1", "m5"], ["m2", "m4"]]
    parts = [take(whole, g, counters=i == 0) for i, g in enumerate(groups)]
    rejoined = merge([take(warmed(), g, counters=i == 0) for i, g in enumerate(reversed(groups))])
    again = FleetState.from_bytes(rejoined.to_bytes())  # before scoring moves it on
    following = telemetry(1_700_000_350, 60, fault="m3")

    expected = scores(warmed(), following)
    pieces = pd.concat(
        [
            scores(p, following[following["unique_id"].isin(g)])
            for p, g in zip(parts, groups, strict=True)
        ]
    )
    pd.testing.assert_frame_equal(pieces.sort_index(), expected.sort_index())
    pd.testing.assert_frame_equal(scores(rejoined, following).sort_index(), expected.sort_index())

    # The bookkeeping around the models, through bytes.
    assert sorted(again.detector.machines) == sorted(MACHINES)
    assert set(again.episodes.open) == set(whole.episodes.open) == {"m3"}
    assert again.extra == {
        "machines": whole.extra["machines"],
        "note": "kept",
        "checks": whole.extra["checks"],
    }
    assert again.detector.skipped == whole.detector.skipped
    assert again.watermark == whole.watermark
    assert set(parts[0].episodes.open) == {"m3"} and not parts[1].episodes.open
    assert parts[1].extra["machines"] == {"m1": ["m1", "acme"], "m5": ["m5", "acme"]}
    assert parts[0].extra["checks"] == whole.extra["checks"]  # one part holds the fleet's
    assert "checks" not in parts[1].extra and parts[1].extra["note"] == "kept"


def test_merge_refuses_overlaps_and_other_configurations() -> None:
    whole = warmed()
    with pytest.raises(ValueError, match="more than one state"):
        merge([take(whole, ["m1", "m2"]), take(whole, ["m2"])])
    other = FleetState.new(DetectorConfig(threshold=0.9))
    with pytest.raises(ValueError, match="configurations"):
        merge([whole, other])
    with pytest.raises(KeyError, match="not in the state"):
        take(whole, ["nope"])
