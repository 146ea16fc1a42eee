"""fleetwatch.joint: sensors seen together catch a fault that moves several a little."""

from __future__ import annotations

import numpy as np

from fleetwatch.attribution import contributors
from fleetwatch.joint import JointView, chi2_as_z
from fleetwatch.views import VIEWS, FeatureViews, ViewSettings


def correlated(n: int, seed: int = 0) -> np.ndarray:
    """Flow, pressure and current following one pump speed, plus an unrelated temperature."""
    rng = np.random.default_rng(seed)
    speed = 1 + 0.2 * np.sin(np.arange(n) / 40) + 0.05 * rng.normal(size=n)
    flow = 100 * speed + rng.normal(0, 1, n)
    pressure = 3 * speed + rng.normal(0, 0.03, n)
    current = 10 * speed + rng.normal(0, 0.1, n)
    temperature = 60 + rng.normal(0, 0.3, n)
    return np.column_stack([flow, pressure, current, temperature])


def test_a_small_joint_fault_passes_no_single_sensor_but_the_joint_view():
    X = correlated(1600)
    fault = slice(1200, 1300)
    X[fault, 0] -= 8.0  # a leak: less flow for the same speed (8 units; it swings by 20)
    X[fault, 1] += 0.24  # and more pressure
    views = FeatureViews(ViewSettings(), 4)
    views.add_models(1)
    _, z, t2 = views.transform(np.zeros(len(X), np.intp), X)
    level = np.abs(z[:, :, VIEWS.index("level")])
    joint = z[:, :, VIEWS.index("joint")]
    assert level[fault].max() < 3  # alone, every sensor looks ordinary
    assert np.median(t2[fault]) > 5 and np.median(t2[900:1200]) < 2.5
    # each sensor against the others: flow and pressure are the ones that broke ranks
    moved = contributors(np.median(joint[fault], axis=0)[None, :])[0]
    assert moved.tolist() == [True, True, False, False]


def test_t_squared_reads_like_a_normal_z_under_health():
    rng = np.random.default_rng(5)
    d = rng.normal(size=(6000, 4)) @ np.array(
        [[1, 0.8, 0, 0], [0, 0.6, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1.0]]
    )
    joint = JointView(4, span=600)
    joint.add_models(1)
    t2 = np.array([joint.step(np.array([0]), row[None, :])[0][0] for row in d])
    late = t2[1000:]
    assert 0.002 < (late > chi2_as_z(np.array([13.28]), np.array([4]))[0]).mean() < 0.03


def test_a_fault_does_not_teach_the_covariance_until_it_outlasts_the_span():
    rng = np.random.default_rng(6)
    d = rng.normal(size=(900, 2))
    d[400:, 0] += 6.0
    joint = JointView(2, span=300)
    joint.add_models(1)
    t2 = np.array([joint.step(np.array([0]), row[None, :])[0][0] for row in d])
    assert np.median(t2[400:690]) > 5  # held while shorter than the span
    assert t2[-50:].max() < 4  # a new regime after that
