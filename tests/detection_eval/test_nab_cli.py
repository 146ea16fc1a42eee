"""`python -m detection_eval nab` on a small synthetic NAB-format corpus written here."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detection_eval.cli import main
from detection_eval.nab_benchmark import score_alerts
from detection_eval.nab_corpus import (
    NabCorpus,
    load_corpus,
    read_series,
    read_windows,
    result_path,
)
from detection_eval.nab_scorer import PROFILES
from detection_eval.product_detector import NAB_OVERRIDES, NAB_START, product_config
from fleetwatch.state import FleetState
from tests.support import PYTHON, REPO_ROOT


def write_corpus(
    root: Path, spike_rows: dict[str, list[int]], length: int = 1
) -> tuple[Path, Path]:
    """Flat series with a spike (`length` rows) per window, in NAB's `<category>/<file>.csv`
    layout."""
    data = root / "data"
    windows: dict[str, list[list[str]]] = {}
    rng = np.random.default_rng(7)
    for name, rows in spike_rows.items():
        n = 600
        stamps = pd.date_range("2024-01-01", periods=n, freq="5min")
        values = 10 + rng.normal(0, 0.1, n)
        windows[f"synthetic/{name}.csv"] = []
        for row in rows:
            values[row : row + length] += 50
            start, end = stamps[row - 5], stamps[row + 24]
            windows[f"synthetic/{name}.csv"].append([f"{start}.000000", f"{end}.000000"])
        path = data / "synthetic" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(
            path, index=False
        )
    windows_path = root / "windows.json"
    windows_path.write_text(json.dumps(windows))
    return data, windows_path


def window_starts(corpus: NabCorpus) -> dict[str, np.ndarray]:
    """A perfect detector: a detection on each labelled window's first row, per file."""
    starts = {}
    for f in corpus.files:
        rows = np.zeros(f.layout.n_rows, bool)
        rows[f.layout.windows[:, 0]] = True
        starts[f.key] = rows
    return starts


def write_result_files(
    results: Path, detector: str, corpus: NabCorpus, scores: Mapping[str, np.ndarray]
) -> None:
    """Result files as another tool writes them: flat `<results>/<detector>/<detector>_<file>`
    (as in shared/), timestamp and anomaly_score."""
    for f in corpus.files:
        path = results / detector / f"{detector}_{Path(f.key).name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = {"timestamp": f.frame["timestamp"], "anomaly_score": scores[f.key].astype(float)}
        pd.DataFrame(frame).to_csv(path)


@pytest.fixture
def corpus_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_corpus(tmp_path, {"one": [300], "two": [250, 450]})


def test_nab_command_runs_a_detector_writes_nab_results_and_json(
    tmp_path: Path, corpus_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, windows = corpus_files
    out = tmp_path / "scores.json"
    config = json.dumps({"name": "zdiff", "views": ["abs_diff"], "scaling": "running_minmax"})
    code = main(
        ["nab", "--data", str(data), "--windows", str(windows), "--detector", config]
        + ["--results", str(tmp_path / "results"), "--json", str(out), "--jobs", "1"]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"standard", "reward_low_FP_rate", "reward_low_FN_rate", "profiles"}
    assert report["detector"] == "zdiff"
    standard = report["profiles"]["standard"]
    assert [f["file"] for f in standard["files"]] == ["synthetic/one.csv", "synthetic/two.csv"]
    assert standard["perfect"] == 3.0 and standard["null"] == -3.0
    # A spike at each window's 6th row is an easy catch: every window found, near the edge.
    assert report["standard"] > 90
    assert "zdiff" in capsys.readouterr().out

    written = pd.read_csv(result_path(tmp_path / "results", "zdiff", "synthetic/two.csv"))
    assert list(written.columns) == [
        "timestamp",
        "value",
        "anomaly_score",
        "label",
        "S(t)_standard",
        "S(t)_reward_low_FP_rate",
        "S(t)_reward_low_FN_rate",
    ]
    assert written["label"].sum() == 60
    file_scores = {f["file"]: f["score"] for f in standard["files"]}
    assert written["S(t)_standard"].sum() == pytest.approx(file_scores["synthetic/two.csv"])
    table = pd.read_csv(tmp_path / "results" / "zdiff" / "zdiff_standard_scores.csv")
    assert table["Score"].iloc[-1] == pytest.approx(standard["raw"])


def test_scores_from_existing_result_files_perfect_is_100_null_is_0(
    tmp_path: Path, corpus_files: tuple[Path, Path]
) -> None:
    """`--scores-from` scores result files another tool wrote, found by NAB's naming."""
    data, windows = corpus_files
    corpus = load_corpus(data, read_windows(windows))
    perfect = window_starts(corpus)
    write_result_files(tmp_path / "results", "perfect", corpus, perfect)
    silent = {key: np.zeros_like(rows) for key, rows in perfect.items()}
    write_result_files(tmp_path / "results", "null", corpus, silent)
    out = tmp_path / "both.json"
    code = main(
        [
            "nab",
            "--data",
            str(data),
            "--windows",
            str(windows),
            "--scores-from",
            str(tmp_path / "results"),
        ]
        + ["--detector", "perfect", "--detector", "null", "--json", str(out)]
    )
    assert code == 0
    reports = {r["detector"]: r for r in json.loads(out.read_text())["detectors"]}
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        assert reports["perfect"][profile] == pytest.approx(100.0)
        assert reports["null"][profile] == 0.0


def test_bad_input_is_a_clear_error_not_a_traceback(
    tmp_path: Path, corpus_files: tuple[Path, Path]
) -> None:
    data, windows = corpus_files
    broken = data / "synthetic" / "one.csv"
    broken.write_text(
        broken.read_text().replace("\n2024-01-01 00:10:00,", "\n2024-01-01 00:10:00,oops")
    )
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "detection_eval",
            "nab",
            "--data",
            str(data),
            "--windows",
            str(windows),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "one.csv" in result.stderr and "row 3" in result.stderr
    assert "Traceback" not in result.stderr
    assert main(["nab", "--data", str(data), "--windows", str(windows), "--detector", "nope"]) == 2


def test_read_series_keeps_file_order_and_rejects_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("timestamp,value\n2024-01-01 00:05:00,2\n2024-01-01 00:00:00,1\n")
    assert read_series(path)["value"].tolist() == [2.0, 1.0]
    path.write_text("time,value\n2024-01-01,1\n")
    with pytest.raises(ValueError, match="missing column"):
        read_series(path)


def test_seeds_run_each_detector_per_seed_and_report_the_mean(
    tmp_path: Path, corpus_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, windows = corpus_files
    out = tmp_path / "seeds.json"
    config = json.dumps({"name": "d", "views": ["abs_diff"], "scaling": "ewm_zscore"})
    args = ["nab", "--data", str(data), "--windows", str(windows), "--detector", config]
    assert main([*args, "--detector", '{"kind": "zscore", "name": "z"}', "--seeds", "1-3"]) == 2
    assert "z has no seed" in capsys.readouterr().err
    assert main([*args, "--seeds", "1,2", "--json", str(out), "--results", str(tmp_path)]) == 0
    payload = json.loads(out.read_text())
    assert [r["detector"] for r in payload["detectors"]] == ["d@seed1", "d@seed2"]
    assert [r["config"]["seed"] for r in payload["detectors"]] == [1, 2]
    mean = payload["seed_means"]["d"]["standard"]
    assert mean["seeds"] == 2
    assert mean["mean"] == pytest.approx(sum(r["standard"] for r in payload["detectors"]) / 2)
    assert "seed mean" in capsys.readouterr().out


def test_alerts_are_scored_as_they_stand_without_a_threshold_sweep(
    corpus_files: tuple[Path, Path],
) -> None:
    """An alert on each window's first row is perfect; one more alert before the first window
    costs exactly the profile's fpWeight (the sweep cannot drop it)."""
    data, windows = corpus_files
    corpus = load_corpus(data, read_windows(windows))
    profiles = PROFILES
    perfect = window_starts(corpus)
    assert {p: r.normalised for p, r in score_alerts(corpus, perfect, profiles).items()} == {
        p: pytest.approx(100.0) for p in profiles
    }
    noisy = {key: rows.copy() for key, rows in perfect.items()}
    first = corpus.files[0]
    noisy[first.key][first.layout.probation] = True  # first scored row, before any window
    for name, result in score_alerts(corpus, noisy, profiles).items():
        cost = profiles[name]
        assert result.raw == pytest.approx(result.perfect - cost.fp)
    silent = {key: np.zeros_like(rows) for key, rows in perfect.items()}
    assert all(r.normalised == 0.0 for r in score_alerts(corpus, silent, profiles).values())


def test_default_alerts_are_what_the_pipeline_would_post(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The product's alerts are the pipeline's "opened" events: one per 10-row excursion,
    early in its window, except one that ends inside the cooldown after the previous one."""
    data, windows = write_corpus(tmp_path, {"one": [300], "two": [350, 450]}, length=10)
    out = tmp_path / "default.json"
    args = ["nab", "--data", str(data), "--windows", str(windows), "--detector", "default"]
    assert main([*args, "--json", str(out), "--jobs", "1"]) == 0
    report = json.loads(out.read_text())
    corpus = load_corpus(data, read_windows(windows))
    posted = {}
    for f in corpus.files:
        state = FleetState.new(product_config(None, NAB_OVERRIDES))
        values = f.frame["value"].to_numpy()
        times = NAB_START + pd.to_timedelta(np.arange(len(values)), unit="s")
        frame = pd.DataFrame({"unique_id": "series", "time": times, "value": values})
        for start in range(0, len(frame), 60):  # one-minute runs, as scheduled
            _, events = state.process(frame.iloc[start : start + 60])
            for event in (e for e in events if e.kind == "opened"):
                posted.setdefault(f.key, []).append(
                    int((event.time - NAB_START.value) // 1_000_000_000)
                )
    assert sorted(posted) == ["synthetic/one.csv", "synthetic/two.csv"]
    assert [len(rows) for rows in posted.values()] == [1, 1]  # the 450 excursion: cooldown
    alerts = {}
    for f in corpus.files:
        alerts[f.key] = np.zeros(f.layout.n_rows, bool)
        alerts[f.key][posted[f.key]] = True
        assert f.layout.windows[0, 0] <= posted[f.key][0] <= f.layout.windows[0, 0] + 10
    assert report["alerts"]["count"] == 2
    expected = score_alerts(corpus, alerts, PROFILES)
    assert report["alerts"]["standard"] == pytest.approx(expected["standard"].normalised)
    assert 50 < report["alerts"]["standard"] < 80  # two windows of three, early
    assert "alerts as sent" in capsys.readouterr().out


def test_all_scores_the_published_result_files_beside_upstream_and_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make eval` puts NAB's own detectors (result files in the folder) in the same table."""
    nab = tmp_path / "nab"
    data, windows = write_corpus(nab, {"one": [300], "two": [350, 450]}, length=10)
    windows.rename(nab / "combined_windows_synthetic.json")
    corpus = load_corpus(data, read_windows(nab / "combined_windows_synthetic.json"))
    write_result_files(nab / "results", "perfect", corpus, window_starts(corpus))
    monkeypatch.setenv("NAB_DIR", str(nab))
    out_dir = tmp_path / "out"
    args = ["all", "--output", str(out_dir), "--minutes", "60", "--machines", "5", "--jobs", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "NAB's own result files" in out and "alerts as sent" in out
    nab_scores = json.loads((out_dir / "eval.json").read_text())["nab"]
    assert set(nab_scores) == {"upstream", "default", "perfect"}
    assert nab_scores["perfect"]["standard"] == pytest.approx(100.0)
    assert "alerts" in nab_scores["default"] and "alerts" not in nab_scores["perfect"]
