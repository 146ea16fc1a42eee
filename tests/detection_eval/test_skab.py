"""`python -m detection_eval skab` on a tiny SKAB-layout corpus written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detection_eval import skab
from detection_eval.cli import main
from detection_eval.product_detector import product_config
from fleetwatch.detector import FleetDetector
from tests.detection_eval.synthetic import FAULT, write_skab


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_skab(tmp_path / "skab")


def test_files_are_found_in_natural_order_without_the_anomaly_free_recording(
    corpus: Path,
) -> None:
    experiments = skab.load_skab(corpus)
    assert [e.name for e in experiments] == ["other/1.csv", "other/2.csv", "other/3.csv"]
    assert experiments[1].faults == [(FAULT[0] + 20, FAULT[1] + 20)]


def test_the_protocol_pools_the_product_s_is_anomaly_rows_after_the_first_400(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The harness's F1, FAR and MAR equal those computed here from the detector's own
    `is_anomaly` column on rows 400 onwards, pooled over the files."""
    out = tmp_path / "skab.json"
    args = ["skab", "--data", str(corpus), "--seeds", "1", "--jobs", "1", "--json", str(out)]
    assert main([*args, "--detector", "default", "--detector", "every-row"]) == 0
    payload = json.loads(out.read_text())
    runs = {r["detector"]: r for r in payload["runs"]}
    truth, marked = [], []
    for experiment in skab.load_skab(corpus):
        frame = pd.DataFrame(experiment.values, columns=list(skab.SENSORS))
        frame["unique_id"] = "pump"
        frame["time"] = pd.DatetimeIndex(experiment.times, tz="UTC")
        config = product_config({"seed": 1}, {"features": skab.SENSORS})
        scored = FleetDetector(config).score_frame(frame)
        truth.append(experiment.labels[skab.TRAIN_ROWS :])
        marked.append(scored["is_anomaly"].to_numpy(bool)[skab.TRAIN_ROWS :])
    truth, marked = np.concatenate(truth), np.concatenate(marked)
    tp, fp = int((truth & marked).sum()), int((~truth & marked).sum())
    fn, tn = int((truth & ~marked).sum()), int((~truth & ~marked).sum())
    default = runs["default"]
    assert (default["tp"], default["fp"], default["fn"], default["tn"]) == (tp, fp, fn, tn)
    assert default["f1"] == pytest.approx(tp / (tp + (fp + fn) / 2))
    assert default["far"] == pytest.approx(fp / (fp + tn))
    # A joint three-sensor step of 30 deviations is caught in every file, quickly.
    assert default["caught"] == default["faults"] == 3
    assert default["median_delay_s"] <= 10
    assert default["config"]["driver_active"] is False  # no `load` column: no fit view
    every = runs["every row"]
    positives = int(truth.sum())
    assert every["far"] == 1.0 and every["mar"] == 0.0
    assert every["f1"] == pytest.approx(positives / (positives + (len(truth) - positives) / 2))
    text = capsys.readouterr().out
    assert "T-squared (published)" in text and "driver 'load'" in text


def test_a_driver_among_the_sensors_is_used_and_reported(corpus: Path) -> None:
    detector = skab.resolve('{"name": "flow", "product": {"driver": "Volume Flow RateRMS"}}')
    (result,) = skab.evaluate(skab.load_skab(corpus), [detector], jobs=1)
    assert result.config["driver_active"] is True
    assert result.config["product"]["driver"] == "Volume Flow RateRMS"


def test_bad_skab_input_is_a_clear_error(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = corpus / "data" / "other" / "2.csv"
    frame = pd.read_csv(path, sep=";").drop(columns=["Pressure"])
    frame.to_csv(path, sep=";", index=False)
    assert main(["skab", "--data", str(corpus), "--seeds", "1", "--jobs", "1"]) == 2
    assert "2.csv" in capsys.readouterr().err
    assert main(["skab", "--data", str(corpus / "nowhere"), "--seeds", "1"]) == 2
    assert "no SKAB data folder" in capsys.readouterr().err
