"""fleetwatch.fleet: each machine's scores are its own River model's, however batches mix them."""

from __future__ import annotations

import numpy as np
import pytest

from detection_eval.river_engine import RiverEngine
from fleetwatch.fleet import Fleet
from tests.fleetwatch.reference import river_model, river_scores, stream

FEATURES = ["load", "vibration", "power", "temperature"]


def interleaved(machines: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points of several machines in one stream, in random order, each with its own signal."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, machines, n)
    X = np.empty((n, len(FEATURES)))
    for m in range(machines):
        mine = keys == m
        X[mine] = stream(int(mine.sum()), len(FEATURES), seed=seed + m)
    return np.array([f"machine-{k}" for k in keys], dtype=object), X


def per_machine_river(keys, X, params, order):
    expected = np.empty(len(X))
    for key in dict.fromkeys(keys):
        mine = keys == key
        model = river_model(
            seed=params["seed"], **{k: params[k] for k in ("n_trees", "height", "window_size")}
        )
        expected[mine] = river_scores(model, X[mine], order, names=FEATURES)
    return expected


@pytest.mark.parametrize("order", ["score_then_learn", "learn_then_score"])
@pytest.mark.parametrize(
    "params",
    [
        {"n_trees": 5, "height": 2, "window_size": 250, "seed": 1},
        {"n_trees": 12, "height": 5, "window_size": 30, "seed": 4},
    ],
)
def test_fleet_scores_equal_one_river_model_per_machine(params, order):
    keys, X = interleaved(machines=6, n=2400, seed=params["height"])
    expected = per_machine_river(keys, X, params, order)
    fleet = Fleet(FEATURES, **params)
    cuts = [0, 1, 2, 60, 61, 700, 1500, len(X)]  # new machines appear in later batches too
    got = np.concatenate(
        [
            fleet.score_learn_many(keys[a:b], X[a:b], order)
            for a, b in zip(cuts, cuts[1:], strict=False)
        ]
    )
    assert np.abs(got - expected).max() <= 1e-12
    assert sorted(fleet.keys) == sorted(set(keys))


def test_river_engine_is_the_same_fleet():
    keys, X = interleaved(machines=4, n=900, seed=8)
    numpy_fleet = Fleet(FEATURES, 8, 4, 40, seed=2)
    river_fleet = Fleet(FEATURES, 8, 4, 40, seed=2, engine=RiverEngine)
    a = numpy_fleet.score_learn_many(keys, X)
    b = river_fleet.score_learn_many(keys, X)
    assert np.abs(a - b).max() <= 1e-12
    rows = numpy_fleet.rows(keys[:10])
    assert (numpy_fleet.window_fill(rows) == river_fleet.window_fill(rows)).all()
    assert (numpy_fleet.warm(rows) == river_fleet.warm(rows)).all()


def test_score_and_learn_in_separate_calls_equal_the_combined_call():
    keys, X = interleaved(machines=3, n=500, seed=3)
    combined = Fleet(FEATURES, 10, 4, 50, seed=1)
    expected = combined.score_learn_many(keys, X)
    split = Fleet(FEATURES, 10, 4, 50, seed=1)
    rows = split.rows(keys)
    encoded = split.encode(X, rows)
    got = np.empty(len(X))
    for i in range(len(X)):  # River's loop: score_one, then learn_one
        got[i : i + 1] = split.score(rows[i : i + 1], encoded[i : i + 1])
        split.learn(rows[i : i + 1], encoded[i : i + 1])
    assert np.abs(got - expected).max() <= 1e-12


def test_keys_are_strings_and_unknown_keys_can_be_refused():
    fleet = Fleet(["power"], 5, 2, 10, seed=1)
    rows = fleet.rows([1, "1", "m2", 1])
    assert list(rows) == [0, 0, 1, 0]
    assert fleet.keys == ["1", "m2"]
    with pytest.raises(KeyError, match="m3"):
        fleet.rows(["m3"], add=False)
    with pytest.raises(ValueError, match="missing"):
        fleet.rows(["m1", None])


def test_a_fleet_needs_a_seed_and_a_known_engine():
    with pytest.raises(TypeError, match="seed"):
        Fleet(["power"], seed=None)
    with pytest.raises(ValueError, match="engine"):
        Fleet(["power"], seed=1, engine="numba")
    with pytest.raises(TypeError, match="numpy engine"):
        Fleet(["power"], seed=1, engine=RiverEngine).masses()
