"""fleetwatch.hst against River 0.23 itself: same trees, same scores (|diff| <= 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest

from fleetwatch import hst
from fleetwatch.hst import HalfSpaceTrees, TreeStructure
from tests.fleetwatch.reference import river_model, river_scores, stream

EXACT = 1e-12
ORDERS = ("score_then_learn", "learn_then_score")


def batched(model: HalfSpaceTrees, X: np.ndarray, sizes, order: str) -> np.ndarray:
    """Feed X in consecutive batches of the given sizes (the last one takes the rest)."""
    out, start = [], 0
    for size in [*sizes, len(X)]:
        out.append(model.score_learn_many(X[start : start + size], order=order))
        start += size
        if start >= len(X):
            break
    return np.concatenate(out)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    ("n_trees", "height", "window", "d", "n"),
    [
        (5, 2, 250, 1, 1200),  # the blog's configuration
        (5, 2, 250, 4, 1200),
        (25, 8, 250, 1, 1100),
        (25, 8, 250, 4, 1100),
        (10, 3, 7, 3, 400),  # tiny windows: many pivots per batch
    ],
)
def test_scores_equal_river_in_batches_crossing_pivots(n_trees, height, window, d, n, order):
    X = stream(n, d, seed=n_trees + height + d)
    expected = river_scores(river_model(n_trees, height, window, seed=1), X, order)
    model = HalfSpaceTrees(n_trees, height, window, seed=1)
    # Batches of 1, odd sizes, one crossing several pivots, then the rest in one call.
    got = batched(model, X, [1, 1, 3, window - 6, 2, 1, 3 * window + 17, 101], order)
    assert np.abs(got - expected).max() <= EXACT
    assert (expected[window:] > 0).any()  # the comparison covers real scores, not warm-up zeros


def test_batches_of_one_equal_river():
    X = stream(180, 2, seed=3)
    expected = river_scores(river_model(8, 4, 25, seed=7), X)
    model = HalfSpaceTrees(8, 4, 25, seed=7)
    got = np.concatenate([model.score_learn_many(X[i : i + 1]) for i in range(len(X))])
    assert np.abs(got - expected).max() <= EXACT


def test_deep_forest_25x15x1000_equals_river():
    """One River 25x15 model (~10 s, ~350 MB): 4 features, batches crossing two pivots."""
    X = stream(2150, 4, seed=15)
    expected = river_scores(river_model(25, 15, 1000, seed=1), X)
    got = batched(HalfSpaceTrees(25, 15, 1000, seed=1), X, [1, 998, 3, 1100], "score_then_learn")
    assert np.abs(got - expected).max() <= EXACT
    assert expected[1000:].std() > 0


def test_trees_are_river_trees_with_limits_and_many_features():
    """Twelve features sort as River sorts them (f10 < f2), and limits weight the choice."""
    names = [f"f{j}" for j in range(12)]
    limits = {"f3": (-5.0, 5.0), "f10": (0.0, 100.0), "f0": (0.2, 0.4)}
    river = river_model(6, 5, 50, seed=11, limits=limits)
    river.learn_one(dict.fromkeys(names, 0.5))
    structure = TreeStructure.grow(names, 6, 5, limits, seed=11)
    for t, tree in enumerate(river.trees):
        nodes = [(0, tree)]
        while nodes:
            index, node = nodes.pop()
            if not hasattr(node, "feature"):
                continue
            assert names[structure.split_column[t, index]] == node.feature
            assert structure.split_threshold[t, index] == node.threshold
            nodes += [(2 * index + 1, node.left), (2 * index + 2, node.right)]


def test_limits_and_values_outside_them_equal_river():
    X = stream(900, 3, seed=5) * 40 - 10  # well outside the limits at times
    limits = {"f0": (-10.0, 30.0), "f1": (0.0, 20.0), "f2": (-20.0, 40.0)}
    expected = river_scores(river_model(12, 6, 100, seed=2, limits=limits), X)
    got = HalfSpaceTrees(12, 6, 100, limits=limits, seed=2).score_learn_many(X)
    assert np.abs(got - expected).max() <= EXACT


def test_nan_goes_right_as_in_river():
    X = stream(700, 2, seed=9)
    X[::11, 0] = np.nan
    X[5::17, 1] = np.nan
    expected = river_scores(river_model(10, 4, 60, seed=4), X)
    got = HalfSpaceTrees(10, 4, 60, seed=4).score_learn_many(X)
    assert np.abs(got - expected).max() <= EXACT


def test_any_interleaving_of_score_and_learn_equals_river():
    rng = np.random.default_rng(0)
    X = stream(900, 2, seed=12)
    river = river_model(9, 5, 40, seed=3)
    model = HalfSpaceTrees(9, 5, 40, seed=3)
    start = 0
    while start < len(X):
        size = int(rng.integers(1, 90))
        chunk = X[start : start + size]
        if rng.random() < 0.5:
            model.learn_many(chunk)
            for row in chunk.tolist():
                river.learn_one({"f0": row[0], "f1": row[1]})
        else:
            got = model.score_many(chunk)
            expected = [river.score_one({"f0": a, "f1": b}) for a, b in chunk.tolist()]
            assert np.abs(got - expected).max() <= EXACT
        start += size


def test_large_batches_are_split_into_steps_with_the_same_scores(monkeypatch):
    X = stream(3000, 2, seed=21)
    whole = HalfSpaceTrees(10, 6, 50, seed=5).score_learn_many(X)
    monkeypatch.setattr(hst, "TABLE_BUDGET", 3 * 10 * 64)  # at most 3 windows per step
    monkeypatch.setattr(hst, "LANES", 700)
    stepped = HalfSpaceTrees(10, 6, 50, seed=5).score_learn_many(X)
    assert np.array_equal(whole, stepped)


def test_named_features_map_columns_to_river_keys():
    """Columns in any order: trees are grown over sorted names, as River does."""
    X = stream(600, 3, seed=2)
    names = ["temperature", "load", "power"]
    expected = river_scores(river_model(7, 4, 50, seed=8), X, names=names)
    got = HalfSpaceTrees(7, 4, 50, seed=8, features=names).score_learn_many(X)
    assert np.abs(got - expected).max() <= EXACT


@pytest.mark.parametrize(
    ("kwargs", "X", "message"),
    [
        ({}, np.zeros(5), "2-D"),
        ({"features": ["a", "b"]}, np.zeros((5, 3)), "shape"),
        ({"limits": {"f0": (1.0, 1.0)}}, np.zeros((5, 1)), "low < high"),
        ({"height": 0}, np.zeros((5, 1)), "height"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, X, message):
    with pytest.raises(ValueError, match=message):
        HalfSpaceTrees(**kwargs).score_learn_many(X)


def test_unknown_order_is_rejected():
    with pytest.raises(ValueError, match="order"):
        HalfSpaceTrees(seed=1).score_learn_many(np.zeros((3, 1)), order="learn_only")


@pytest.mark.parametrize(("n_trees", "height", "d"), [(5, 2, 1), (5, 2, 4), (4, 3, 2), (6, 3, 3)])
def test_grid_routing_equals_walking_the_levels(n_trees, height, d):
    """Small forests route by a lookup in the grid of thresholds; values exactly at a
    threshold, NaN and values outside the limits land where the level walk puts them."""
    structure = TreeStructure.grow([f"f{j}" for j in range(d)], n_trees, height, seed=6)
    assert structure._grid is not None
    X = stream(500, d, seed=1)
    X[::7] = structure.split_threshold.ravel()[structure.split_column.ravel() == 0][0]
    X[::13, 0] = np.nan
    X[::17] = -3.0
    np.testing.assert_array_equal(structure.route(X), structure._route_levels(X))
