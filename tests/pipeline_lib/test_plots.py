"""Anomaly plots: real PNGs on disk, one per machine with anomalies, no figure left behind."""

from __future__ import annotations

import gc
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from influx_magic.influx import FEATURES
from influx_magic.plots import plot_path, plot_url, render_machine_plots
from tests.pipeline_lib.helpers import PNG_MAGIC, scores


def live_figures() -> int:
    gc.collect()
    return sum(isinstance(o, Figure) for o in gc.get_objects())


def test_one_valid_png_per_machine_with_anomalies(tmp_path: Path) -> None:
    frame = pd.concat(
        [scores("machine1"), scores("machine2", anomalous=slice(200, 260)), scores("machine3")]
    )
    episode = {"unique_id": "acme-inc-machine3", "start": frame["time"].iloc[100], "end": None}
    before = live_figures()

    paths = render_machine_plots(
        frame, tmp_path, threshold=0.8, features=FEATURES, episodes=[episode]
    )

    assert sorted(paths) == ["acme-inc-machine2", "acme-inc-machine3"]  # machine1 was healthy
    for unique_id, path in paths.items():
        assert path == plot_path(tmp_path, unique_id)
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 800 and image.size[1] >= 600
    assert plt.get_fignums() == []
    assert live_figures() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "acme-inc-machine2.png",
        "acme-inc-machine3.png",
    ]  # no temp files left


def test_plots_are_overwritten_in_place_and_can_be_restricted(tmp_path: Path) -> None:
    frame = pd.concat([scores("machine2", anomalous=slice(10, 20)), scores("machine4")])
    first = render_machine_plots(frame, tmp_path, threshold=0.8, features=FEATURES)
    again = render_machine_plots(
        frame, tmp_path, threshold=0.8, features=FEATURES, machines=["acme-inc-machine4"]
    )
    assert list(again) == ["acme-inc-machine4"]
    assert first["acme-inc-machine2"].exists()
    assert render_machine_plots(frame, tmp_path, threshold=0.8, features=FEATURES) == first


def test_odd_ids_get_safe_distinct_file_names(tmp_path: Path) -> None:
    names = {plot_path(tmp_path, uid).name for uid in ["a/b", "a b", "a-b", "../etc/passwd"]}
    assert len(names) == 4
    assert all("/" not in n and not n.startswith(".") for n in names)
    assert plot_path(tmp_path, "../etc/passwd").parent == tmp_path


def test_plot_urls_point_under_public_base_url(tmp_path: Path) -> None:
    path = plot_path(tmp_path, "acme-inc-machine2")
    assert plot_url(path, tmp_path, "http://inbox:5006") == (
        "http://inbox:5006/plots/acme-inc-machine2.png"
    )


def test_missing_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="score, is_anomaly"):
        render_machine_plots(
            scores("m").drop(columns=["score", "is_anomaly"]),
            tmp_path,
            threshold=0.8,
            features=FEATURES,
        )


def test_nothing_to_plot_writes_nothing(tmp_path: Path) -> None:
    empty = scores("machine1").iloc[0:0]
    assert render_machine_plots(empty, tmp_path, threshold=0.8, features=FEATURES) == {}
    assert (
        render_machine_plots(scores("machine1"), tmp_path, threshold=0.8, features=FEATURES) == {}
    )
    assert list(tmp_path.iterdir()) == []


def test_a_subset_of_features_gets_one_panel_each(tmp_path: Path) -> None:
    frame = scores("machine2", anomalous=slice(10, 20)).drop(columns=["temperature"])
    (path,) = render_machine_plots(
        frame, tmp_path, threshold=0.7, features=("load", "power")
    ).values()
    with Image.open(path) as image:
        two_panels = image.size[1]
    (path,) = render_machine_plots(scores("machine2", anomalous=slice(10, 20)), tmp_path / "all",
                                   threshold=0.7, features=FEATURES).values()  # fmt: skip
    with Image.open(path) as image:
        assert image.size[1] > two_panels
