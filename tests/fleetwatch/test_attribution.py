"""fleetwatch.attribution: one rule names the sensors that moved, for the alert and the plot."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from fleetwatch.attribution import contributors, describe, ranked_contributors
from fleetwatch.detector import DetectorConfig, FleetDetector
from fleetwatch.episodes import EpisodeTracker
from influx_magic.alerts import Alert
from influx_magic.plots import message_figure


def test_only_sensors_that_moved_contribute():
    deviations = np.array(
        [
            [40.0, 4.0, -1.0],  # one sensor far out: the small one beside it is not a cause
            [6.0, -5.0, 2.0],  # two of a size: both
            [1.0, 0.5, np.nan],  # none past MIN_Z: the largest alone is named
            [np.nan, np.nan, np.nan],  # nothing known: nobody
        ]
    )
    assert contributors(deviations).tolist() == [
        [True, False, False],
        [True, True, False],
        [True, False, False],
        [False, False, False],
    ]
    assert ranked_contributors({"a": 2.0, "b": -12.0, "c": 7.0}) == ["b", "c"]


def test_deviations_are_described_in_words_after_the_view_that_found_them():
    assert describe("temperature", 7.21, "fit") == (
        "temperature 7.2 deviations above its usual level for this load"
    )
    assert describe("load", 19.4, "level") == "load 19.4 deviations above its usual level"
    assert "step" in describe("power", 12.0, "change")
    assert describe("vibration", -6.0, "joint").endswith("below what the other sensors indicate")


def test_the_alert_and_the_plot_name_the_same_sensors():
    rng = np.random.default_rng(8)
    n = 900
    times = pd.date_range("2024-03-01", periods=n, freq="s", tz="UTC")
    load = 75 + 20 * np.sin(np.arange(n) / 20) + rng.normal(0, 2, n)
    frame = pd.DataFrame(
        {
            "unique_id": "m1",
            "time": times,
            "load": load.round(1),
            "vibration": (80 + 0.1 * load + rng.normal(0, 1, n)).round(1),
            "power": (200 + 0.3 * load + rng.normal(0, 2, n)).round(1),
            "temperature": (30 + 0.1 * load + rng.normal(0, 0.15, n)).round(1),
        }
    )
    frame.loc[700:, "vibration"] += 25.0  # bearing wear: vibration only
    scored = FleetDetector(DetectorConfig()).score_frame(frame)
    tracker = EpisodeTracker(DetectorConfig().features)
    events = tracker.update(scored)
    opened = [e for e in events if e.kind == "opened"]
    assert opened and opened[0].episode.top_features == ["vibration"]
    assert opened[0].episode.moved[0].startswith("vibration ")
    assert "deviations above its usual level for this load" in opened[0].episode.moved[0]
    features = DetectorConfig().features
    alert = Alert(opened[0], "machine1", "Acme", DetectorConfig().threshold)
    figure = message_figure(
        scored.assign(machineID="machine1"),
        alert,
        features=features,
        threshold=DetectorConfig().threshold,
        history=timedelta(minutes=15),
    )
    # The first column's panels: the score, then one per feature; a marked panel has points.
    panels = figure.axes[1 : 1 + len(features)]
    marked = [f for f, ax in zip(features, panels, strict=True) if any(
        len(c.get_offsets()) for c in ax.collections
    )]  # fmt: skip
    assert marked == ["vibration"]  # the anomalous points on vibration's panel only
