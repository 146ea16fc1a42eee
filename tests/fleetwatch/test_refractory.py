"""fleetwatch.refractory: one early detection per event, exactly as the sequential rule."""

from __future__ import annotations

import numpy as np

from fleetwatch.refractory import Refractory


def sequential(surprise: np.ndarray, half_life: float, memory: float = 0.0) -> np.ndarray:
    decay = 0.5 ** (1 / half_life)
    out = []
    for s in surprise:
        out.append(max(0.0, s - memory))
        memory = max(memory * decay, s)
    return np.array(out)


def test_batches_of_many_machines_follow_the_sequential_rule_with_carried_memory():
    rng = np.random.default_rng(7)
    surprise = np.where(rng.random((3, 400)) < 0.05, rng.exponential(10, (3, 400)), 0.0)
    refractory = Refractory(half_life=20)
    refractory.add_models(3)
    got = np.zeros_like(surprise)
    for a, b in [(0, 1), (1, 150), (150, 151), (151, 400)]:
        rows = np.repeat(np.arange(3), b - a)
        starts = np.arange(3) * (b - a)
        news, after = refractory.discount(rows, starts, surprise[:, a:b].ravel())
        refractory.commit(np.arange(3), after[starts + (b - a) - 1])
        got[:, a:b] = news.reshape(3, b - a)
    expected = np.stack([sequential(row, 20) for row in surprise])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_an_event_is_news_once_and_a_later_one_again():
    surprise = np.r_[np.full(30, 15.0), np.zeros(200), np.full(5, 15.0)]
    refractory = Refractory(half_life=20)
    refractory.add_models(1)
    news, _ = refractory.discount(np.zeros(len(surprise), np.intp), np.array([0]), surprise)
    assert news[0] == 15.0 and news[1:30].max() == 0.0  # the event: once
    assert news[230] > 14.0  # ten half-lives later, the same surprise is news again
