"""fleetwatch.calibration: a surprise is a tail probability learned from the machine's own
history, the same on a quiet and on a spiky series."""

from __future__ import annotations

import numpy as np

from fleetwatch.calibration import TailCalibration
from fleetwatch.detector import VIEW_PRIOR


def calibrated(stream: np.ndarray, machines: int = 1) -> tuple[TailCalibration, np.ndarray]:
    calibration = TailCalibration([VIEW_PRIOR[0]], [VIEW_PRIOR[1]])
    calibration.add_models(machines)
    m = np.arange(machines)
    out = np.array([calibration.step(m, r[:, None])[:, 0] for r in stream])
    return calibration, out


def test_a_stationary_stream_gets_surprises_that_are_tail_probabilities():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(20_000, 2))
    z[:, 1] = rng.standard_t(3, 20_000)  # machine 2: heavy tails
    _, surprise = calibrated(0.5 * z**2, machines=2)
    late = surprise[5000:]
    for p in (0.05, 0.01, 0.002, 0.001):
        gaussian, heavy = (late > -np.log(p)).mean(axis=0)
        # the share of readings more surprising than -ln p is about p; on the heavy-tailed
        # machine at most p (between the two quantiles the tail is taken as exponential,
        # lighter than it is: fewer alarms, never more)
        assert p / 2 < gaussian < p * 1.5, (p, gaussian)
        assert p / 5 < heavy < p * 1.5, (p, heavy)


def test_the_same_raw_evidence_is_less_surprising_where_it_is_routine():
    rng = np.random.default_rng(3)
    quiet = 0.5 * rng.normal(size=5000) ** 2
    spiky = quiet.copy()
    spiky[::100] = 0.5 * 8.0**2  # an 8-sigma spike every 100 readings
    calibration, _ = calibrated(np.column_stack([quiet, spiky]), machines=2)
    probe = np.full((2, 1), 0.5 * 8.0**2)
    s_quiet, s_spiky = calibration.step(np.arange(2), probe, learn=False)[:, 0]
    assert s_quiet > 20 and s_spiky < s_quiet / 2


def test_a_routine_large_jump_is_as_surprising_as_it_is_frequent():
    rng = np.random.default_rng(9)
    stream = 0.5 * rng.normal(size=6000) ** 2
    stream[::144] = 0.5 * 50.0**2  # a jump of 50 deviations twice a day (5-minute readings)
    calibration, surprise = calibrated(stream[:, None])
    routine = surprise[3000::144, 0]
    assert np.median(routine) < 10  # about -ln(1/144) = 5 nats, not 1250
    bigger = calibration.step(np.array([0]), np.array([[0.5 * 80.0**2]]), learn=False)[0, 0]
    assert bigger > np.median(routine) + 5  # a larger one than ever stands out


def test_a_statistic_that_sits_still_is_no_news():
    _, surprise = calibrated(np.zeros((3000, 1)))
    assert surprise.max() < 4  # not the infinite surprise of an excess over a zero spread


def test_learning_a_window_at_once_tracks_learning_it_reading_by_reading():
    rng = np.random.default_rng(4)
    stream = 0.5 * rng.normal(size=(4000, 1)) ** 2
    one, _ = calibrated(stream)
    batch = TailCalibration([VIEW_PRIOR[0]], [VIEW_PRIOR[1]])
    batch.add_models(1)
    m = np.array([0])
    for window in stream.reshape(-1, 250, 1):  # the trees' windows
        terms = batch.window_terms(np.zeros(250, np.intp), window)  # (250, 5, 1)
        batch.learn_window(m, terms.sum(axis=0)[None])
    probe = np.array([[0.5 * 4.0**2]])
    a = one.step(m, probe, learn=False)[0, 0]
    b = batch.step(m, probe, learn=False)[0, 0]
    assert abs(a - b) < 0.25 * a  # the far quantile rests on few readings either way
