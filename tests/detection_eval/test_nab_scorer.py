"""NAB's scoring rules on small hand-made series (no shared data needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detection_eval.nab_scorer import (
    NO_DETECTION_THRESHOLD,
    PROFILES,
    CostMatrix,
    FileLayout,
    normalise,
    null_score,
    perfect_score,
    probation_length,
    scaled_sigmoid,
    score_file,
    sweep,
)

STANDARD = PROFILES["standard"]


def sigmoid_reward(y: float) -> float:
    """NAB's scaled sigmoid, written out: 2 / (1 + e^(5y)) - 1, and -1 from y >= 3."""
    return -1.0 if y >= 3 else 2 / (1 + math.exp(5 * y)) - 1


def test_probation_is_15_percent_capped_at_750_rows() -> None:
    assert probation_length(100) == 15
    assert probation_length(101) == 15  # floor
    assert probation_length(5000) == 750
    assert probation_length(100_000) == 750


def test_scaled_sigmoid_matches_nab_s_documented_values() -> None:
    got = scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 2.999, 3.0, 50.0]))
    expected = [0.98661, 0.84828, 0.0, -0.98661, sigmoid_reward(2.999), -1.0, -1.0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_hand_computed_file_score() -> None:
    """Probation 3 rows; window rows 10..14; detections before, in, twice in, and after it."""
    layout = FileLayout.build("toy", 20, [(10, 14)])
    assert layout.probation == 3
    scores = np.zeros(20)
    scores[[2, 5, 11, 12, 16]] = [1.0, 0.9, 0.8, 1.0, 0.7]
    result = score_file(layout, scores, 0.6, STANDARD)
    fp_before = -0.11  # row 5: before any window, full cost; row 2 is probationary
    tp = sigmoid_reward(-(14 - 11 + 1) / 5) / sigmoid_reward(-1.0)  # row 11, the first in window
    fp_after = 0.11 * sigmoid_reward(abs(14 - 16) / (5 - 1))  # row 16, half a window after it
    assert result.score == pytest.approx(fp_before + tp + fp_after, abs=1e-12)
    assert (result.tp, result.fp, result.fn, result.tn, result.total) == (2, 2, 3, 10, 20)
    expected_rows = np.zeros(20)
    expected_rows[[5, 10, 16]] = [fp_before, tp, fp_after]
    np.testing.assert_allclose(result.per_row, expected_rows, atol=1e-12)


def test_missed_window_costs_fn_weight_on_its_first_row() -> None:
    layout = FileLayout.build("toy", 40, [(10, 14), (30, 34)])
    result = score_file(layout, np.zeros(40), 0.5, PROFILES["reward_low_FN_rate"])
    assert result.score == -4.0
    assert result.per_row[10] == -2.0 and result.per_row[30] == -2.0


def test_perfect_detector_scores_100_and_null_detector_0_for_every_profile() -> None:
    layouts = [
        FileLayout.build("a", 200, [(50, 59), (120, 139)]),
        FileLayout.build("b", 100, [(40, 44)]),
    ]
    perfect, null = [], []
    for layout in layouts:
        scores = np.zeros(layout.n_rows)
        scores[layout.windows[:, 0]] = 1.0  # each window's first row, nothing else
        perfect.append(scores)
        null.append(np.full(layout.n_rows, 0.5))
    for cost in PROFILES.values():
        threshold, best = sweep(layouts, perfect, cost).best()
        assert threshold == 1.0
        assert normalise(best, layouts, cost) == pytest.approx(100.0)
        threshold, best = sweep(layouts, null, cost).best()
        assert threshold == NO_DETECTION_THRESHOLD
        assert normalise(best, layouts, cost) == 0.0


def test_normalisation_uses_null_and_perfect_totals() -> None:
    layouts = [FileLayout.build("a", 100, [(40, 44), (60, 64)])]
    cost = CostMatrix(tp=1.0, fp=0.11, fn=2.0)
    assert perfect_score(layouts, cost) == 2.0 and null_score(layouts, cost) == -4.0
    assert normalise(-1.0, layouts, cost) == pytest.approx(50.0)


def test_window_inside_probation_is_not_scored() -> None:
    layout = FileLayout.build("toy", 100, [(2, 5), (50, 54)])
    assert len(layout.scored_windows) == 1
    assert score_file(layout, np.zeros(100), 0.5, STANDARD).score == -1.0
    assert null_score([layout], STANDARD) == -1.0


def test_ties_pick_the_highest_threshold_like_nab() -> None:
    """Rows after a window's end at distance 0 cost nothing: lower thresholds tie, keep the highest."""
    layout = FileLayout.build("toy", 100, [(50, 59)])
    scores = np.zeros(100)
    scores[50] = 0.9
    threshold, best = sweep([layout], [scores], STANDARD).best()
    assert threshold == 0.9 and best == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.full(20, np.nan), "must be in \\[0, 1\\]"),
        (np.full(20, 1.5), "row 0 is 1.5"),
        (np.zeros(19), "19 scores for 20 rows"),
    ],
)
def test_bad_scores_are_rejected_with_a_clear_error(scores: np.ndarray, message: str) -> None:
    layout = FileLayout.build("toy", 20, [(10, 14)])
    with pytest.raises(ValueError, match=message):
        score_file(layout, scores, 0.5, STANDARD)
    with pytest.raises(ValueError, match=message):
        sweep([layout], [scores], STANDARD)


def test_bad_windows_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        FileLayout.build("toy", 20, [(10, 25)])
    with pytest.raises(ValueError, match="overlap"):
        FileLayout.build("toy", 40, [(10, 20), (15, 30)])


@st.composite
def corpora(draw):
    layouts, scores = [], []
    for index in range(draw(st.integers(1, 3))):
        n = draw(st.integers(20, 120))
        cuts = sorted(draw(st.sets(st.integers(0, n - 1), min_size=0, max_size=6)))
        windows = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
        layouts.append(FileLayout.build(f"f{index}", n, windows))
        # Few distinct values, so ties between rows (and between thresholds) are common.
        levels = draw(
            st.lists(st.sampled_from([0.0, 0.2, 0.5, 0.5, 0.8, 1.0]), min_size=n, max_size=n)
        )
        scores.append(np.array(levels))
    return layouts, scores


@settings(max_examples=150, deadline=None)
@given(corpora(), st.sampled_from(sorted(PROFILES)))
def test_sweep_equals_scoring_every_threshold_separately(corpus, profile: str) -> None:
    layouts, scores = corpus
    cost = PROFILES[profile]
    result = sweep(layouts, scores, cost)
    # NAB's candidates: the distinct scores of the scored (post-probation) rows.
    scored = {
        float(v) for layout, s in zip(layouts, scores, strict=True) for v in s[layout.probation :]
    }
    candidates = [NO_DETECTION_THRESHOLD, *sorted(scored, reverse=True)]
    np.testing.assert_array_equal(result.thresholds, candidates)
    for index, threshold in enumerate(candidates):
        files = [
            score_file(layout, s, threshold, cost)
            for layout, s in zip(layouts, scores, strict=True)
        ]
        assert result.scores[index] == pytest.approx(sum(f.score for f in files), abs=1e-9)
        assert result.tp[index] == sum(f.tp for f in files)
        assert result.fp[index] == sum(f.fp for f in files)
        assert result.fn[index] == sum(f.fn for f in files)
        assert result.tn[index] == sum(f.tn for f in files)
    threshold, best = result.best()
    assert best == pytest.approx(result.scores.max(), abs=1e-9)
    assert threshold == max(
        t for t, s in zip(candidates, result.scores, strict=True) if s >= best - 1e-9
    )
