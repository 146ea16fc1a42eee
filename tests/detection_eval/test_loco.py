"""Leave one category out, candidates and ablations, on tiny synthetic corpora written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detection_eval import ablations, loco
from detection_eval.cli import main
from detection_eval.nab_corpus import load_corpus, read_windows
from detection_eval.nab_scorer import PROFILES
from tests.detection_eval.synthetic import window_starts, write_corpus, write_skab

SPIKES = {"alpha/a1": [300], "alpha/a2": [250, 450], "beta/b1": [350], "quiet/q1": []}


def test_the_choice_is_made_without_the_held_out_category_and_scored_at_its_threshold(
    tmp_path: Path,
) -> None:
    """`sees_alpha` scores alpha's windows 1.0, beta's 0.5 and two quiet rows 0.5; `sees_beta`
    scores beta's windows 1.0 and nothing else. Holding out alpha, only beta and quiet decide:
    `sees_beta` is chosen and scores 0 on alpha, where `sees_alpha` (the oracle), at the 0.5
    threshold it got from beta and quiet, would have scored 100."""
    data, windows = write_corpus(tmp_path, SPIKES, length=3)
    corpus = load_corpus(data, read_windows(windows))
    perfect = window_starts(corpus)

    def scores(weights: dict[str, float], quiet_rows: list[int]):
        out = {}
        for f in corpus.files:
            category = f.key.split("/")[0]
            out[f.key] = perfect[f.key] * weights.get(category, 0.0)
            out[f.key][quiet_rows if category == "quiet" else []] = 0.5
        return out, {}

    runs = {
        "sees_alpha": [scores({"alpha": 1.0, "beta": 0.5}, [200, 300])],
        "sees_beta": [scores({"beta": 1.0}, [])],
    }
    folds = {f.category: f for f in loco.folds(corpus, runs, PROFILES["standard"])}
    assert set(folds) == {"alpha", "beta", "quiet"}
    alpha = folds["alpha"]
    assert alpha.chosen == "sees_beta" and alpha.oracle == "sees_alpha"
    assert alpha.candidates["sees_beta"].held_out_mean == 0.0
    assert alpha.candidates["sees_alpha"].held_out_mean == pytest.approx(100.0)
    assert alpha.candidates["sees_beta"].train_mean == pytest.approx(100.0)
    assert alpha.candidates["sees_alpha"].train_mean < 100.0  # two false detections in quiet
    # Holding out beta: alpha's threshold (1.0) misses beta's 0.5 scores.
    assert folds["beta"].chosen == "sees_alpha"
    assert folds["beta"].candidates["sees_alpha"].held_out_mean == 0.0
    quiet = folds["quiet"]  # no windows: detections at the training threshold instead
    assert quiet.chosen == "sees_alpha" and quiet.oracle == "sees_beta"
    assert quiet.candidates["sees_alpha"].held_out_mean is None
    assert quiet.candidates["sees_alpha"].detections == [2]
    assert quiet.candidates["sees_beta"].detections == [0]
    text = loco.format_folds(list(folds.values()), "sees_beta")
    assert "2 det" in text and "sees_beta held out" in text


def test_ablations_follow_the_configuration() -> None:
    names = [a.name for a in ablations.ablations({"stat_views": ["level", "fit"]}, "mine")]
    # DetectorConfig.ablations() lists its members: the trees, each statistical view, then
    # the news path's parts
    assert names[:4] == ["mine", "without trees", "without level", "without fit"]
    assert "without change news" in names and "without calibration" in names
    without_level = ablations.ablations({"stat_views": ["level", "fit"]})[2]
    assert without_level.overrides == {"stat_views": ["fit"]}
    assert without_level.unavailable is None

    class Custom:
        """A configuration that lists its own members."""

        def ablations(self) -> dict:
            return {"joint": {"joint": False}}

    assert ablations._members(Custom()) == {"joint": {"joint": False}}
    assert ablations.runnable({"height": 0}) is not None  # the detector's own reason


def test_loco_command_runs_candidates_on_nab_and_skab(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, windows = write_corpus(tmp_path / "nab", SPIKES, length=10)
    skab = write_skab(tmp_path / "skab", files=2)
    out = tmp_path / "loco.json"
    args = ["loco", "--data", str(data), "--windows", str(windows), "--skab", str(skab)]
    args += ["--seeds", "1", "--sim-seeds", "", "--jobs", "1", "--json", str(out)]
    candidates = [
        '{"name": "steady", "product": {}}',
        '{"name": "jumpy", "product": {"z_alarm": 3, "persistence": 1}}',
    ]
    assert main([*args, "--candidate", candidates[0], "--candidate", candidates[1]]) == 0
    payload = json.loads(out.read_text())
    assert [f["category"] for f in payload["folds"]] == ["alpha", "beta", "quiet"]
    for fold in payload["folds"]:
        assert fold["chosen"] in {"steady", "jumpy"}
        assert set(fold["candidates"]) == {"steady", "jumpy"}
    assert {s["detector"] for s in payload["skab"]} == {"steady@seed1", "jumpy@seed1"}
    text = capsys.readouterr().out
    assert "Leave one category out" in text and "Candidates on every corpus" in text


def test_ablate_lists_every_member_and_says_why_one_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, windows = write_corpus(tmp_path / "nab", SPIKES, length=10)
    args = ["loco", "--data", str(data), "--windows", str(windows), "--skab", str(tmp_path)]
    args += ["--seeds", "1", "--sim-seeds", "", "--jobs", "1", "--json", str(tmp_path / "a.json")]
    assert main([*args, "--ablate", "--candidate", '{"name": "other", "product": {}}']) == 0
    payload = json.loads((tmp_path / "a.json").read_text())
    names = [c["name"] for c in payload["candidates"]]
    expected = [a.name for a in ablations.ablations()]
    assert names == ["other", *expected]
    text = capsys.readouterr().out
    for candidate in payload["candidates"]:
        if candidate["unavailable"]:
            assert f"unavailable: {candidate['unavailable']}" in text
    ran = {r["detector"] for r in payload["nab"]["detectors"]}
    assert ran == {f"{c['name']}@seed1" for c in payload["candidates"] if not c["unavailable"]}
    assert np.isfinite(payload["nab"]["seed_means"]["other"]["standard"]["mean"])
