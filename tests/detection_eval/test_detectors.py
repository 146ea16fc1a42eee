"""The NAB detector registry: the upstream blog detector exactly, configs from JSON, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from river.anomaly import HalfSpaceTrees

from detection_eval.detectors import SeriesDetector, SeriesDetectorConfig, resolve
from detection_eval.product_detector import ProductSeriesDetector


def series(n: int = 1500, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = 50 + 5 * np.sin(np.arange(n) / 30) + rng.normal(0, 1, n)
    values[1000:1010] += 40
    return values


def test_upstream_is_the_blog_detector_value_for_value() -> None:
    """River HST(5 trees, height 2, window 250, seed 1), batch min-max, learn_one then score_one."""
    values = series()
    scaled = (values - values.min()) / (values.max() - values.min())
    model = HalfSpaceTrees(n_trees=5, height=2, window_size=250, seed=1)
    expected = []
    for v in scaled:
        model.learn_one({"value": v})
        expected.append(model.score_one({"value": v}))
    np.testing.assert_allclose(resolve("upstream").score(values), expected, rtol=0, atol=1e-12)


def test_config_from_inline_json_and_file(tmp_path: Path) -> None:
    inline = resolve('{"views": ["value", "abs_diff"], "n_trees": 7, "smoothing": 3}')
    assert isinstance(inline, SeriesDetector)
    assert inline.config.views == ("value", "abs_diff") and inline.config.n_trees == 7
    path = tmp_path / "wide.json"
    path.write_text(json.dumps({"height": 6, "window_size": 100}))
    from_file = resolve(str(path))
    assert from_file.name == "wide" and from_file.config.height == 6
    scores = from_file.score(series(600))
    assert scores.shape == (600,) and scores.min() >= 0 and scores.max() <= 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('{"n_tree": 5}', "unknown detector setting"),
        ('{"views": ["velocity"]}', "unknown view"),
        ('{"scaling": "magic"}', "scaling must be one of"),
        ('{"height": 0}', "height must be >= 1"),
        ("{not json", "not valid JSON"),
        ("missing.json", "does not exist"),
        ("no-such-detector", "unknown detector"),
    ],
)
def test_bad_detector_specs_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(spec)


def test_same_config_same_scores_and_smoothing_is_a_trailing_mean() -> None:
    values = series(800)
    config = SeriesDetectorConfig(
        views=("value", "diff"), scaling="running_minmax", window_size=100
    )
    first = SeriesDetector(config).score(values)
    np.testing.assert_array_equal(first, SeriesDetector(config).score(values))
    smoothed = SeriesDetector(dataclasses.replace(config, smoothing=4)).score(values)
    np.testing.assert_allclose(smoothed[10], first[7:11].mean())


def test_numpy_engine_reproduces_river_scores_for_a_multi_view_config() -> None:
    """`engine="river"` stays the reference: the NumPy HST must give the same scores."""
    pytest.importorskip("fleetwatch.hst")
    values = series(1200)
    config = SeriesDetectorConfig(
        views=("value", "abs_diff", "baseline_dev"),
        scaling="running_minmax",
        n_trees=8,
        height=5,
        window_size=100,
        order="score_then_learn",
    )
    river = SeriesDetector(dataclasses.replace(config, engine="river")).score(values)
    numpy = SeriesDetector(dataclasses.replace(config, engine="numpy")).score(values)
    np.testing.assert_array_equal(numpy, river)


def test_default_is_the_product_detector_on_the_value_column_river_exact() -> None:
    """NAB's `default` runs fleetwatch.detector.FleetDetector; its River engine gives the same."""
    default = resolve("default")
    assert isinstance(default, ProductSeriesDetector)
    config = default.config["product"]
    assert config["features"] == ["value"] and config["limits"] is None
    values = series(900)
    small = {"window_size": 100, "n_trees": 8}
    numpy = ProductSeriesDetector("small", small).score(values)
    river = ProductSeriesDetector("small", small, engine="river").score(values)
    np.testing.assert_array_equal(numpy, river)
    assert numpy.shape == (900,) and numpy.min() >= 0 and numpy.max() <= 1 and numpy.max() > 0


def test_product_overrides_from_json() -> None:
    detector = resolve('{"name": "deep", "product": {"height": 8}}')
    assert detector.name == "deep" and detector.config["product"]["height"] == 8
    with pytest.raises(ValueError, match="unknown product setting"):
        resolve('{"product": {"depth": 8}}')
    with pytest.raises(ValueError, match="only name, product and clock"):
        resolve('{"product": {}, "views": ["value"]}')
