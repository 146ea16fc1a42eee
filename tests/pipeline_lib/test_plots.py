"""Message plots: a real PNG per message, never rewritten, markers on the sensors that moved."""

from __future__ import annotations

import gc
import os
import time
from datetime import timedelta
from pathlib import Path

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from influx_magic.influx import FEATURES
from influx_magic.plots import (
    message_figure,
    message_plot_name,
    message_plot_path,
    plot_url,
    prune_plots,
    render_message_plot,
)
from tests.pipeline_lib.helpers import PNG_MAGIC, event, scores

HISTORY = timedelta(minutes=30)


def live_figures() -> int:
    gc.collect()
    return sum(isinstance(o, Figure) for o in gc.get_objects())


def fault(machine: str = "machine2", kind: str = "opened") -> tuple[pd.DataFrame, object]:
    """Five minutes of a machine whose load jumps at 10:02:30, and the alert about it."""
    frame = scores(machine, anomalous=slice(150, 200))
    return frame, event(machine, kind, start=frame["time"].iloc[150])


def test_one_png_per_message_written_once_and_never_again(tmp_path: Path) -> None:
    frame, alert = fault()
    path = message_plot_path(tmp_path, alert)
    before = live_figures()

    assert render_message_plot(frame, path, alert, features=FEATURES, threshold=0.8,
                               history=HISTORY)  # fmt: skip

    assert path == tmp_path / "acme-inc-machine2" / "machine2-20240501T100000-opened.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] >= 1000 and image.size[1] >= 600
    picture = path.read_bytes()
    later = frame.assign(score=0.99)  # a later run with other data: the message's plot stays
    assert not render_message_plot(later, path, alert, features=FEATURES, threshold=0.8,
                                   history=HISTORY)  # fmt: skip
    assert path.read_bytes() == picture
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files
    assert plt.get_fignums() == [] and live_figures() == before


def test_each_message_of_an_episode_has_its_own_file() -> None:
    names = {
        message_plot_name("acme-m2", "ep1", "opened", 0),
        message_plot_name("acme-m2", "ep1", "recurring", 1),
        message_plot_name("acme-m2", "ep1", "recurring", 2),
        message_plot_name("acme-m2", "ep1", "resolved", 2),
        message_plot_name("acme-m2", "ep2", "opened", 0),
    }
    assert len(names) == 5


def test_markers_only_on_the_sensors_that_moved_and_a_zoom_on_the_start() -> None:
    frame, alert = fault()  # load and vibration moved (the alert's top features)
    figure = message_figure(frame, alert, features=FEATURES, threshold=0.8, history=HISTORY)
    overview, zoom = figure.axes[: len(FEATURES) + 1], figure.axes[len(FEATURES) + 1 :]
    score_ax, sensor_axes = overview[0], overview[1:]

    def marked(ax) -> int:
        return sum(len(c.get_offsets()) for c in ax.collections if c.get_offsets().size)

    by_feature = {feature: marked(ax) for feature, ax in zip(FEATURES, sensor_axes, strict=True)}
    assert by_feature["load"] == by_feature["vibration"] == 50
    assert by_feature["temperature"] == by_feature["power"] == 0
    assert marked(score_ax) == 50
    low, high = (mdates.num2date(x) for x in zoom[0].get_xlim())
    start = pd.Timestamp(alert.start)
    assert start - pd.Timedelta(minutes=1) <= low < start < high <= start + pd.Timedelta(minutes=2)
    assert figure.get_suptitle().startswith("Anomaly: machine2 · acme-inc-machine2")
    figure.clear()


def test_odd_ids_get_safe_distinct_file_names() -> None:
    names = {message_plot_name(uid, "e", "opened", 0) for uid in ["a/b", "a b", "a-b", "../x"]}
    assert len(names) == 4
    for name in names:
        assert len(name.parts) == 2 and not name.parts[0].startswith(".")


def test_plot_urls_point_under_public_base_url(tmp_path: Path) -> None:
    path = tmp_path / "acme-inc-machine2" / "e-opened.png"
    assert plot_url(path, tmp_path, "http://inbox:5006/") == (
        "http://inbox:5006/plots/acme-inc-machine2/e-opened.png"
    )


def test_missing_columns_are_named(tmp_path: Path) -> None:
    frame, alert = fault()
    with pytest.raises(ValueError, match="score, is_anomaly"):
        render_message_plot(frame.drop(columns=["score", "is_anomaly"]), tmp_path / "x.png",
                            alert, features=FEATURES, threshold=0.8, history=HISTORY)  # fmt: skip


def test_plots_older_than_the_retention_are_pruned(tmp_path: Path) -> None:
    frame, alert = fault()
    old = message_plot_path(tmp_path, alert)
    render_message_plot(frame, old, alert, features=FEATURES, threshold=0.8, history=HISTORY)
    frame3, alert3 = fault("machine3")
    recent = message_plot_path(tmp_path, alert3)
    render_message_plot(frame3, recent, alert3, features=FEATURES, threshold=0.8, history=HISTORY)
    month_ago = time.time() - 31 * 86400
    os.utime(old, (month_ago, month_ago))

    assert prune_plots(tmp_path, timedelta(days=30)) == 1
    assert not old.exists() and not old.parent.exists() and recent.exists()
