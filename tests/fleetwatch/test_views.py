"""fleetwatch.views and the detector's views mode: online, split-invariant, River-exact trees."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from detection_eval.river_engine import RiverEngine
from fleetwatch.detector import DetectorConfig, FleetDetector
from fleetwatch.noise_floor import RELATIVE
from fleetwatch.views import (
    DRIVER_LAGS,
    MIN_POINTS,
    P_BOUNDS,
    RIDGE,
    SHIFT_VAR_SPANS,
    VIEWS,
    FeatureViews,
    ViewSettings,
    run_chance,
)
from tests.fleetwatch.test_detector import T0, telemetry

SETTINGS = ViewSettings(level_span=40, change_span=20)
#: The default views mode on two features, with a short window so that tests stay quick.
VIEWS_CONFIG = DetectorConfig(
    features=("load", "power"), window_size=50, quiet_points=5, quiet_seconds=60.0
)


def naive_views(series: np.ndarray, settings: ViewSettings) -> np.ndarray:
    """The module doc's rules for one sensor, one reading at a time: z of (level, change,
    still, fit, shift) per reading, with the noise floor and the level's regime rule; without
    a driver the fit view is 0 (no times: the daily profile stays off)."""
    alphas = [2 / (settings.level_span + 1), 2 / (settings.change_span + 1)]
    a_recent = 2 / (settings.shift_span + 1)
    a_spread = 2 / (SHIFT_VAR_SPANS * settings.shift_span + 1)
    mean, var = [0.0, 0.0], [0.0, 0.0]
    recent, spread, run = 0.0, 0.0, 0.0
    previous, still, p = None, 0, 0.5
    quantum, magnitude = math.inf, 0.0
    out = []
    for count, x in enumerate(series.tolist()):
        step = 0.0 if previous is None else abs(x - previous)
        unchanged = previous is not None and step == 0
        still = still + 1 if unchanged else 0
        p = min(max(p, P_BOUNDS[0]), P_BOUNDS[1])
        # a run goes on with its value's chance: the most common value's, for rounded noise
        z_still = math.sqrt(2 * still * -math.log(max(p, math.erf(math.sqrt(math.pi / 2) * p))))
        if previous is not None:
            p += 2 / (settings.level_span + 1) * (unchanged - p)
        # The floor before this reading: one quantum, or the relative precision of the last.
        floor = max(quantum if math.isfinite(quantum) else 0.0, RELATIVE * magnitude)
        if previous is not None and step > RELATIVE * (abs(x) + abs(previous)):
            quantum = min(quantum, step)
        magnitude = abs(x)
        previous = x
        row = []
        for j, value in enumerate((x, step)):
            sd = max(math.sqrt(var[j]), floor)
            residual = value - mean[j]
            row.append(residual / sd if sd > 0 and count >= 2 else 0.0)
            alpha = max(alphas[j], 1 / (count + 1))
            outlier = (
                j == 0
                and var[j] > 0
                and abs(residual) > settings.outlier_z * math.sqrt(var[j])
                and count >= MIN_POINTS
            )
            if j == 0:  # outliers teach nothing until they outnumber the rest: a regime
                run = run + 1 if outlier else max(run - 1, 0)
                outlier = outlier and run < settings.level_span
            if not outlier:
                mean[j] += alpha * residual
                var[j] = (1 - alpha) * (var[j] + alpha * residual**2)
        sd = max(math.sqrt(spread), floor)
        residual = x - recent
        z_shift = residual / sd if sd > 0 and count >= 2 else 0.0
        if count == 0:
            recent, spread = x, 0.0
        else:
            recent += max(a_recent, 1 / (count + 1)) * residual
            spread += max(a_spread, 1 / (count + 1)) * (residual**2 - spread)
        out.append([*row, z_still, 0.0, z_shift])
    return np.array(out)


def naive_fit(driver: np.ndarray, sensor: np.ndarray, settings: ViewSettings) -> np.ndarray:
    """The module doc's `fit` view for one sensor, one reading at a time."""
    lags = 1 - np.exp(-1 / np.array(DRIVER_LAGS))
    alpha0 = 2 / (settings.level_span + 1)
    lagged = None
    gram, moment, theta = np.zeros((4, 4)), np.zeros(4), np.zeros(4)
    var, run = 0.0, 0.0
    quantum, magnitude, previous = math.inf, 0.0, None
    out = []
    for count, (d, x) in enumerate(zip(driver.tolist(), sensor.tolist(), strict=True)):
        floor = max(quantum if math.isfinite(quantum) else 0.0, RELATIVE * magnitude)
        if previous is not None and abs(x - previous) > RELATIVE * (abs(x) + abs(previous)):
            quantum = min(quantum, abs(x - previous))
        magnitude, previous = abs(x), x
        lagged = np.full(2, d) if lagged is None else lagged + lags * (d - lagged)
        phi = np.r_[1.0, d, lagged]
        predicted = float(theta @ phi)
        residual = x - predicted
        sd = max(math.sqrt(var), floor)
        ready = count >= MIN_POINTS and var > 0
        out.append(residual / sd if ready else 0.0)
        outlier = ready and abs(residual) > settings.outlier_z * sd
        run = run + 1 if outlier else max(run - 1, 0)
        target = predicted if outlier and run < settings.level_span else x
        alpha = max(alpha0, 1 / (count + 1))
        gram += alpha * (np.outer(phi, phi) - gram)
        moment += alpha * (target * phi - moment)
        since = count - MIN_POINTS // 2
        if since >= 0 and not outlier:
            a = max(alpha0, 1 / (since + 1))
            var = (1 - a) * (var + a * residual**2)
        theta = np.linalg.solve(gram + np.diag(RIDGE * np.diag(gram) + 1e-12), moment)
    return np.array(out)


def test_the_fit_view_follows_the_documented_rules_in_any_batches_and_sees_a_small_drift():
    rng = np.random.default_rng(4)
    n, machines = 700, 2
    t = np.arange(n)
    load = 75 + 20 * np.sin(2 * np.pi * t / 120 + np.arange(machines)[:, None])
    load = np.round(load + rng.normal(0, 2, (machines, n)), 1)
    lagged = np.zeros((machines, n))
    for k in range(1, n):
        lagged[:, k] = lagged[:, k - 1] + (1 - math.exp(-1 / 45)) * (load[:, k] - lagged[:, k - 1])
    lagged[:, 0] = load[:, 0]
    temperature = 30 + 0.1 * lagged + rng.normal(0, 0.15, (machines, n))
    temperature[1, 600:] += 0.1 * np.arange(100)  # a drift on machine 2: +1 degree per 10 s
    X = np.stack([load, np.round(temperature, 1)], axis=2)
    views = FeatureViews(SETTINGS, 2, driver=0)
    views.add_models(machines)
    got = np.zeros((machines, n))
    for a, b in [(0, 1), (1, 333), (333, 334), (334, n)]:
        rows = np.repeat(np.arange(machines), b - a)
        _, z, _ = views.transform(rows, X[:, a:b].reshape(-1, 2))
        z = z.reshape(machines, b - a, 2, len(VIEWS))
        assert (z[..., 0, VIEWS.index("fit")] == 0).all()  # the driver has no fit view
        got[:, a:b] = z[..., 1, VIEWS.index("fit")]
    expected = np.stack([naive_fit(load[m], X[m, :, 1], SETTINGS) for m in range(machines)])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert np.abs(got[:, MIN_POINTS + 50 : 600]).max() < 5  # health: only the noise
    assert got[1, 615] > 5  # +1.5 degrees: many deviations of the noise, not of the swings


def test_views_follow_the_documented_rules_for_every_machine_in_any_batches():
    rng = np.random.default_rng(3)
    n, machines = 300, 3
    X = np.round(50 + np.cumsum(rng.normal(0, 1, (machines, n, 2)), axis=1), 0)
    X[1, 150:200, 0] = X[1, 149, 0]  # a stuck sensor
    X[2, 100:, 1] += 40.0  # a level shift
    expected = np.stack(
        [np.stack([naive_views(X[m, :, f], SETTINGS) for f in range(2)], 1) for m in range(3)]
    )
    views = FeatureViews(SETTINGS, 2)
    views.add_models(machines)
    got = np.zeros_like(expected)
    for a, b in [(0, 1), (1, 60), (60, 61), (61, 233), (233, n)]:  # batches of all machines
        rows = np.repeat(np.arange(machines), b - a)
        unit, z, _ = views.transform(rows, X[:, a:b].reshape(-1, 2))
        got[:, a:b] = z.reshape(machines, b - a, 2, len(VIEWS))[..., :5]
        assert ((unit >= 0) & (unit <= 1)).all()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    still = got[1, :, 0, 2]
    assert still[160:170].min() > still[:150].max()  # still: the stuck run stands out
    assert got[2, 100, 1, 0] > 10 and got[2, 101, 1, 1] < 1  # the shift: level yes, step once


def test_a_sustained_shift_is_not_absorbed_until_it_outlasts_the_level_span():
    views = FeatureViews(ViewSettings(level_span=100), 1)
    views.add_models(1)
    x = np.r_[np.tile([0.0, 1.0], 200), np.full(400, 20.0)][:, None]
    _, z, _ = views.transform(np.zeros(len(x), np.intp), x)
    level = z[:, 0, 0]
    assert level[400] > 15  # 19.5 units out, the spread floored at the quantum (1)
    assert level[400:499].min() == level[400]  # a fault cannot teach the level anything
    assert level[-1] < 3  # one that outlasts level_span readings is a new regime


def test_settings_are_checked():
    with pytest.raises(ValueError, match="level_span"):
        ViewSettings(level_span=0)
    with pytest.raises(ValueError, match="unknown view"):
        DetectorConfig(views=("level", "slope"))
    with pytest.raises(ValueError, match="raw mode"):
        DetectorConfig(limits={"load": (0, 1)})
    with pytest.raises(ValueError, match="driver"):
        DetectorConfig(driver=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="driver"):
        FeatureViews(SETTINGS, 2, driver=2)


def test_views_mode_frames_split_anywhere_score_like_one_frame():
    data = telemetry(3, 240, faults=[(1, 150, 200)])
    whole = FleetDetector(VIEWS_CONFIG).score_frame(data)
    detector = FleetDetector(VIEWS_CONFIG)
    parts = [detector.score_frame(data.iloc[a : a + 83]) for a in range(0, len(data), 83)]
    pd.testing.assert_frame_equal(pd.concat(parts), whole)
    assert whole["in_episode"].any()


def test_views_mode_river_engine_gives_the_same_frame():
    data = telemetry(2, 200, faults=[(0, 120, 170)])
    a = FleetDetector(VIEWS_CONFIG).score_frame(data)
    b = FleetDetector(VIEWS_CONFIG, engine=RiverEngine).score_frame(data)
    pd.testing.assert_frame_equal(a, b)


def test_a_run_of_a_rounded_noisy_reading_goes_on_as_often_as_its_value_repeats():
    """Gaussian noise of 1.5 resolutions, rounded (the simulator's temperature): a run of equal
    readings goes on more often than two readings are equal (the repeated value is likely the
    most common one); p**k (the rule before) made runs too rare, `run_chance` does not."""
    rng = np.random.default_rng(11)
    x = np.round(rng.normal(0.04, 0.15, 2_000_000), 1)
    same = x[1:] == x[:-1]
    p = same.mean()
    # runs: how often a reading that ends k repeats is followed by one more, for k = 3..6
    lengths = np.diff(np.flatnonzero(np.r_[True, ~same, True])) - 1
    at_least = np.array([(lengths >= k).sum() for k in range(3, 8)], float)
    goes_on = at_least[1:].sum() / at_least[:-1].sum()
    assert 0.17 < p < 0.2
    assert goes_on > 1.2 * p  # a run is not a fresh coin each reading
    # run_chance is where a long run's chance tends to (the most common value's): above what
    # runs of 3-7 show, by little
    assert 0.0 < float(run_chance(np.array([p]))[0]) - goes_on < 0.03
    # never below p, and p itself for a sensor that rarely changes
    grid = np.linspace(0.0, 1.0, 101)
    assert (run_chance(grid) >= np.clip(grid, *P_BOUNDS)).all()
    assert float(run_chance(np.array([0.97]))[0]) == pytest.approx(0.97)


def test_a_healthy_rounded_sensor_is_not_stuck_but_a_frozen_one_is_within_a_dozen_readings():
    rng = np.random.default_rng(2)
    x = np.round(30 + rng.normal(0, 0.15, 20_000), 1)
    x[-40:] = x[-41]  # frozen
    views = FeatureViews(ViewSettings(), 1)
    views.add_models(1)
    _, z, _ = views.transform(np.zeros(len(x), np.intp), x[:, None])
    still = z[:, 0, VIEWS.index("still")]
    assert still[:-40].max() < 5.0
    assert (still[-40:] >= 5.0).argmax() <= 12


def test_the_default_finds_an_overload_a_stuck_sensor_and_a_drift_but_not_health():
    times = T0 + pd.to_timedelta(np.arange(900), unit="s")
    rng = np.random.default_rng(5)
    load = 75 + 20 * np.sin(2 * np.pi * np.arange(900) / 120) + rng.normal(0, 2, 900)
    temperature = 30 + 0.1 * load + rng.normal(0, 0.15, 900)
    frames = {}
    for kind in ("healthy", "overload", "stuck", "drift"):
        lo, t = load.copy(), temperature.copy()
        if kind == "overload":
            lo[600:] = 200.0 + rng.normal(0, 2, 300)
        if kind == "stuck":
            t[600:] = t[599]
        if kind == "drift":
            t[600:] += 0.1 * np.arange(300)
        frames[kind] = pd.DataFrame(
            {"unique_id": kind, "time": times, "load": lo.round(1), "temperature": t.round(1)}
        )
    config = DetectorConfig(features=("load", "temperature"))
    scored = FleetDetector(config).score_frame(pd.concat(frames.values(), ignore_index=True))
    starts = scored[scored["episode_start"]].groupby("unique_id")["time"].min()
    assert "healthy" not in starts.index
    assert times[600] <= starts["overload"] <= times[630]
    assert times[600] <= starts["stuck"] <= times[630]
    # The fit view: against what the load explains, +1 degree per 10 s is news within 30 s.
    assert times[600] <= starts["drift"] <= times[630]
    overload = scored[scored["unique_id"] == "overload"].iloc[603:]
    assert overload["in_episode"].all()  # held, not learned: it stays open while it lasts
    stuck = scored[scored["unique_id"] == "stuck"]
    assert abs(stuck.loc[stuck["episode_start"], "dev_temperature"].iloc[0]) > 4  # named
    # Severity: the score grows with how unusual the machine is. Held well after their start,
    # the overload (load 200 %) scores above the drift while the drift is still slight.
    drift = scored[scored["unique_id"] == "drift"]
    held_overload = overload["score"].iloc[60:120].min()
    slight_drift = drift.loc[drift["in_episode"], "score"].iloc[:20].max()
    assert held_overload > slight_drift > DetectorConfig().threshold
