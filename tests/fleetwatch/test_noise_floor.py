"""fleetwatch.noise_floor and its use by the views: a one-quantum step on a flat series is
not news."""

from __future__ import annotations

import numpy as np

from fleetwatch.noise_floor import RELATIVE, NoiseFloor
from fleetwatch.views import VIEWS, FeatureViews, ViewSettings


def run_floor(series: np.ndarray) -> tuple[NoiseFloor, np.ndarray]:
    floor = NoiseFloor(1)
    floor.add_models(1)
    previous = np.array([[np.nan]])
    before = []
    for x in series:
        before.append(floor.step(np.array([0]), np.array([[x]]), previous)[0, 0])
        previous = np.array([[x]])
    return floor, np.array(before)


def test_a_constant_series_has_only_the_relative_floor():
    floor, before = run_floor(np.full(50, 45.0))
    assert before[0] == 0.0  # nothing known before the first reading
    assert np.isinf(floor.quantum[0, 0])  # no change seen: no resolution yet
    assert floor.floor(np.array([0]))[0, 0] == RELATIVE * 45.0


def test_a_quantised_series_floors_at_one_quantum_and_ignores_float_noise():
    rng = np.random.default_rng(0)
    values = 0.134 + 0.002 * rng.integers(-2, 3, 300)  # a CPU share in steps of 0.002
    values[::7] += 1e-13  # float noise is not a resolution
    floor, before = run_floor(values)
    assert abs(floor.quantum[0, 0] - 0.002) < 1e-9
    assert before[-1] == floor.floor(np.array([0]))[0, 0]


def test_the_views_read_one_quantum_on_a_flat_series_as_one_deviation():
    # Flat for 300 readings, then one step of one quantum (the resolution seen early on).
    x = np.r_[20.0, 20.1, np.full(300, 20.0), 20.1][:, None]
    for quanta, expect_small in ((1.0, True), (0.0, False)):
        views = FeatureViews(ViewSettings(quanta=quanta), 1)
        views.add_models(1)
        _, z, _ = views.transform(np.zeros(len(x), np.intp), x)
        last = np.abs(z[-1, 0, [VIEWS.index("level"), VIEWS.index("change")]]).max()
        if expect_small:
            assert last <= 1.0 + 1e-9  # with the floor: one deviation at most
        else:
            assert last > 8  # without it: "many deviations" out of nothing
