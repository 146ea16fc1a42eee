"""fleetwatch.scaling: per-machine scaling that never looks ahead and survives batch splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwatch.scaling import LimitScaler, OnlineMinMaxScaler, segmented_running_max

values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), st.just(float("nan"))
)
points = st.lists(st.tuples(st.integers(0, 3), values, values), min_size=1, max_size=60)


def naive_online(stream: list[tuple[int, float, float]]) -> np.ndarray:
    """Scale each point by the min/max of its machine's earlier values, one point at a time."""
    seen: dict[tuple[int, int], list[float]] = {}
    out = []
    for machine, *row in stream:
        scaled = []
        for f, x in enumerate(row):
            history = seen.setdefault((machine, f), [])
            if math.isnan(x):
                scaled.append(math.nan)
                continue
            if not history:
                scaled.append(0.5)
            else:
                low, high = min(history), max(history)
                if high > low:
                    scaled.append((x - low) / (high - low))
                else:
                    scaled.append(0.5 + 0.5 * float(np.sign(x - low)))
            history.append(x)
        out.append(scaled)
    return np.array(out)


@settings(max_examples=150, deadline=None)
@given(points, st.integers(0, 60))
def test_online_minmax_is_sequential_and_split_invariant(stream, cut):
    machines = np.array([p[0] for p in stream], dtype=np.intp)
    X = np.array([p[1:] for p in stream], dtype=np.float64)
    expected = naive_online(stream)

    whole = OnlineMinMaxScaler(2)
    whole.add_models(4)
    np.testing.assert_array_equal(whole.scale(machines, X)[0], expected)

    split = OnlineMinMaxScaler(2)
    split.add_models(4)
    first, _ = split.scale(machines[:cut], X[:cut])
    second, _ = split.scale(machines[cut:], X[cut:])
    np.testing.assert_array_equal(np.concatenate([first, second]), expected)
    np.testing.assert_array_equal(split.minimum, whole.minimum)
    np.testing.assert_array_equal(split.maximum, whole.maximum)


def test_a_flat_signal_never_divides_by_zero_and_a_jump_stands_out():
    scaler = OnlineMinMaxScaler(1)
    scaler.add_models(1)
    flat, spans = scaler.scale(np.zeros(50, np.intp), np.full((50, 1), 7.0))
    assert (flat == 0.5).all() and (spans == 1.0).all()
    jump, _ = scaler.scale(np.zeros(2, np.intp), np.array([[9.0], [3.0]]))
    assert jump[0, 0] == 1.0 and jump[1, 0] < 0


@settings(max_examples=100, deadline=None)
@given(
    st.floats(-1e3, 1e3),
    st.floats(1e-3, 1e3),
    st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=20),
)
def test_limit_scaling_maps_the_limits_onto_the_unit_interval(low, width, xs):
    scaler = LimitScaler({"a": (low, low + width)})
    X = np.array(xs + [low, low + width])[:, None]
    scaled = scaler.scale(np.zeros(len(X), np.intp), X)[0][:, 0]
    assert scaled[-2] == 0.0
    assert scaled[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(scaled[:-2] * width + low, xs, rtol=1e-9, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(values, max_size=8), min_size=1, max_size=6), st.data())
def test_segmented_running_max_matches_a_loop(groups, data):
    carry = np.array([data.draw(values) for _ in groups])
    flat = np.array([x for g in groups for x in g], dtype=np.float64)
    starts = np.cumsum([0] + [len(g) for g in groups[:-1]])
    before, after = segmented_running_max(flat, starts, carry)
    expected_before, expected_after = [], []
    for group, start in zip(groups, carry, strict=True):
        best = start
        for x in group:
            expected_before.append(best)
            if not math.isnan(x) and (math.isnan(best) or x > best):
                best = x
        expected_after.append(best)
    np.testing.assert_array_equal(before, np.array(expected_before, dtype=np.float64))
    np.testing.assert_array_equal(after, np.array(expected_after, dtype=np.float64))


def test_limits_must_cover_every_feature_and_be_ordered():
    with pytest.raises(ValueError, match="no limits"):
        LimitScaler({"a": (0, 1)}, ["a", "b"])
    with pytest.raises(ValueError, match="low < high"):
        LimitScaler({"a": (1, 0)})
