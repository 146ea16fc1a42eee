"""The scorer reproduces NAB's own published numbers from NAB's own result files.

`shared/nab/results/<detector>/` holds NAB v1.1's output for three detectors on the
realKnownCause files: the anomaly scores, NAB's `label` and per-row `S(t)_<profile>` columns, and
the published per-file standard scores at NAB's threshold. Skipped when the subset is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detection_eval.nab_corpus import (
    find_result,
    load_corpus,
    read_profiles,
    read_result_scores,
    read_windows,
)
from detection_eval.nab_scorer import PROFILES, normalise, score_file, sweep

# NAB v1.1 config/thresholds.json: each detector's threshold per profile, optimised by NAB over
# all 58 series. The standard ones are also the `Threshold` column of the published score files.
NAB_THRESHOLDS = {
    "numenta": {
        "standard": 0.5421876907348634,
        "reward_low_FP_rate": 0.5751955032348636,
        "reward_low_FN_rate": 0.5421876907348634,
    },
    "windowedGaussian": dict.fromkeys(PROFILES, 1.0),
    "null": dict.fromkeys(PROFILES, 0.6250000000000001),
}


@pytest.fixture(scope="module")
def corpus(shared_nab: Path):
    return load_corpus(
        shared_nab / "data", read_windows(shared_nab / "combined_windows_realKnownCause.json")
    )


def test_profiles_file_matches_the_built_in_profiles(shared_nab: Path) -> None:
    assert read_profiles(shared_nab / "profiles.json") == PROFILES


@pytest.mark.parametrize("detector", sorted(NAB_THRESHOLDS))
def test_per_row_scores_and_labels_match_nab(shared_nab: Path, corpus, detector: str) -> None:
    results = shared_nab / "results" / detector
    scores = read_result_scores(results, detector, corpus.files)
    for nab_file in corpus.files:
        published = pd.read_csv(find_result(results, detector, nab_file.key))
        np.testing.assert_array_equal(nab_file.layout.labels, published["label"].to_numpy())
        for profile, cost in PROFILES.items():
            threshold = NAB_THRESHOLDS[detector][profile]
            ours = score_file(nab_file.layout, scores[nab_file.key], threshold, cost)
            expected = published[f"S(t)_{profile}"].to_numpy()
            np.testing.assert_allclose(
                ours.per_row, expected, rtol=0, atol=0.01, err_msg=f"{nab_file.key} {profile}"
            )
            assert ours.score == pytest.approx(expected.sum(), abs=0.01)


@pytest.mark.parametrize("detector", sorted(NAB_THRESHOLDS))
def test_per_file_scores_match_the_published_table(shared_nab: Path, corpus, detector: str) -> None:
    results = shared_nab / "results" / detector
    table = pd.read_csv(results / f"{detector}_standard_scores_realKnownCause.csv").set_index(
        "File"
    )
    scores = read_result_scores(results, detector, corpus.files)
    assert sorted(table.index) == sorted(f.key for f in corpus.files)
    for nab_file in corpus.files:
        row = table.loc[nab_file.key]
        ours = score_file(
            nab_file.layout, scores[nab_file.key], float(row["Threshold"]), PROFILES["standard"]
        )
        assert ours.score == pytest.approx(row["Score"], abs=0.01), nab_file.key
        assert (ours.tp, ours.tn, ours.fp, ours.fn, ours.total) == (
            row["TP"],
            row["TN"],
            row["FP"],
            row["FN"],
            row["Total_Count"],
        )


def test_the_sweep_agrees_with_per_file_scoring_and_beats_nab_s_corpus_threshold(
    shared_nab: Path, corpus
) -> None:
    """Optimising over these 7 files can only do better than NAB's 58-file threshold."""
    scores = read_result_scores(shared_nab / "results" / "numenta", "numenta", corpus.files)
    ordered = [scores[f.key] for f in corpus.files]
    for profile, cost in PROFILES.items():
        result = sweep(corpus.layouts, ordered, cost)
        nab_threshold = NAB_THRESHOLDS["numenta"][profile]
        at_nab = sum(
            score_file(f.layout, scores[f.key], nab_threshold, cost).score for f in corpus.files
        )
        # The sweep's entry for the lowest candidate at or above NAB's threshold is the same set
        # of detections.
        index = np.flatnonzero(result.thresholds >= nab_threshold)[-1]
        assert result.scores[index] == pytest.approx(at_nab, abs=1e-9)
        threshold, best = result.best()
        assert best >= at_nab
        at_best = sum(
            score_file(f.layout, scores[f.key], threshold, cost).score for f in corpus.files
        )
        assert at_best == pytest.approx(best, abs=1e-9)


def test_null_detector_normalises_to_zero(shared_nab: Path, corpus) -> None:
    scores = read_result_scores(shared_nab / "results" / "null", "null", corpus.files)
    for cost in PROFILES.values():
        _, best = sweep(corpus.layouts, [scores[f.key] for f in corpus.files], cost).best()
        assert normalise(best, corpus.layouts, cost) == 0.0
