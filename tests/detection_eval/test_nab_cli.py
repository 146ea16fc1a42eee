"""`python -m detection_eval nab` on a small synthetic NAB-format corpus written here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detection_eval.cli import main
from detection_eval.nab_benchmark import score_alerts
from detection_eval.nab_corpus import load_corpus, read_series, read_windows, result_path
from detection_eval.nab_scorer import PROFILES
from detection_eval.product_detector import NAB_OVERRIDES, product_config
from fleetwatch.state import FleetState
from tests.detection_eval.synthetic import window_starts, write_corpus, write_result_files
from tests.support import PYTHON, REPO_ROOT


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
        + ["--seeds", "1"]
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
    zscore = ["--detector", '{"kind": "zscore", "name": "z"}']
    assert (
        main([*args, *zscore, "--seeds", "1,2", "--json", str(out), "--results", str(tmp_path)])
        == 0
    )
    payload = json.loads(out.read_text())
    # A detector without a seed (the rolling z-score) runs once, under its own name.
    assert [r["detector"] for r in payload["detectors"]] == ["d@seed1", "d@seed2", "z"]
    assert [r["config"]["seed"] for r in payload["detectors"][:2]] == [1, 2]
    mean = payload["seed_means"]["d"]["standard"]
    assert mean["seeds"] == 2
    runs = payload["detectors"][:2]
    assert mean["mean"] == pytest.approx(sum(r["standard"] for r in runs) / 2)
    assert mean["spread"] == pytest.approx(abs(runs[0]["standard"] - runs[1]["standard"]))
    assert "d (seeds 1,2)" in capsys.readouterr().out


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


def test_default_alerts_are_what_the_pipeline_would_post_in_data_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The product's alerts are the pipeline's "opened" events, fed with the files' own
    5-minute timestamps: one per 10-row excursion, early in its window. In data time the
    second excursion of file two comes 500 minutes after the first, long after the 10-minute
    cooldown, so it is announced too (fed as 1 Hz rows it fell inside the cooldown)."""
    data, windows = write_corpus(tmp_path, {"one": [300], "two": [350, 450]}, length=10)
    out = tmp_path / "default.json"
    args = ["nab", "--data", str(data), "--windows", str(windows), "--detector", "default"]
    assert main([*args, "--json", str(out), "--jobs", "1", "--seeds", "1"]) == 0
    report = json.loads(out.read_text())
    corpus = load_corpus(data, read_windows(windows))
    posted = {}
    for f in corpus.files:
        state = FleetState.new(product_config(None, NAB_OVERRIDES))
        times = pd.DatetimeIndex(f.frame["timestamp"]).tz_localize("UTC")
        frame = pd.DataFrame({"unique_id": "series", "time": times, "value": f.frame["value"]})
        for start in range(0, len(frame), 12):  # one-hour runs, as scheduled
            _, events = state.process(frame.iloc[start : start + 12])
            for event in (e for e in events if e.kind == "opened"):
                posted.setdefault(f.key, []).append(int(times.asi8.searchsorted(event.time)))
    assert sorted(posted) == ["synthetic/one.csv", "synthetic/two.csv"]
    assert [len(rows) for rows in posted.values()] == [1, 2]
    alerts = {}
    for f in corpus.files:
        alerts[f.key] = np.zeros(f.layout.n_rows, bool)
        alerts[f.key][posted[f.key]] = True
        for (start, _), row in zip(f.layout.windows, posted[f.key], strict=True):
            assert start <= row <= start + 10
    assert report["alerts"]["count"] == 3
    expected = score_alerts(corpus, alerts, PROFILES)
    assert report["alerts"]["standard"] == pytest.approx(expected["standard"].normalised)
    assert report["alerts"]["standard"] > 90  # three windows of three, early
    assert "alerts as sent" in capsys.readouterr().out
    rows_clock = tmp_path / "rows.json"
    one_hz = '{"name": "rows", "product": {}, "clock": "rows"}'
    assert main([*args[:-1], one_hz, "--json", str(rows_clock), "--jobs", "1", "--seeds", "1"]) == 0
    assert json.loads(rows_clock.read_text())["alerts"]["count"] == 2


def test_repeated_and_backward_timestamps_are_scored_not_dropped(tmp_path: Path) -> None:
    """NAB files repeat a timestamp or step back in places; the pipeline would drop such a row
    as stale, the harness moves it 1 s after the row before, so every row gets a score."""
    from detection_eval.product_detector import ProductSeriesDetector

    stamps = pd.date_range("2024-01-01", periods=800, freq="5min").to_numpy()
    stamps[400] = stamps[399]
    stamps[600] = stamps[590]
    values = 10 + np.random.default_rng(1).normal(0, 1, 800)
    values[600] += 40
    score, _ = ProductSeriesDetector("default").detect(values, stamps)
    assert score[600] > 0.8  # the spike on the backward row is seen


def test_categories_quiet_files_and_published_results_in_one_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per-category scores are each category's files at the corpus threshold, normalised over
    the category; a category without windows reports its detections per file (the
    anomaly-free acceptance), and a published detector's files join the same tables."""
    spikes = {"alpha/a1": [300], "alpha/a2": [250, 450], "beta/b1": [350], "quiet/q1": []}
    data, windows = write_corpus(tmp_path, spikes, length=3)
    corpus = load_corpus(data, read_windows(windows))
    perfect = window_starts(corpus)
    noisy = {key: rows.astype(float) for key, rows in perfect.items()}
    noisy["quiet/q1.csv"][[200, 300, 400]] = 1.0  # three false detections, no window
    noisy["beta/b1.csv"][:] = 0.0  # beta's window missed
    write_result_files(tmp_path / "results", "mixed", corpus, noisy)
    out = tmp_path / "mixed.json"
    args = ["nab", "--data", str(data), "--windows", str(windows), "--json", str(out)]
    assert main([*args, "--scores-from", str(tmp_path / "results"), "--detector", "null"]) == 0
    payload = json.loads(out.read_text())
    mixed = next(r for r in payload["detectors"] if r["detector"] == "mixed")
    categories = mixed["profiles"]["standard"]["categories"]
    assert categories["alpha"]["normalised"] == pytest.approx(100.0)
    assert categories["beta"]["normalised"] == 0.0
    assert categories["quiet"]["normalised"] is None
    assert categories["quiet"]["detections"] == 3
    assert payload["quiet_detections"]["mixed"] == {"quiet/q1.csv": [3]}
    assert payload["quiet_detections"]["null"] == {"quiet/q1.csv": [0]}
    text = capsys.readouterr().out
    assert "standard by category" in text and "3 det" in text
    assert "detections, no-anomaly files" in text and "q1" in text
    assert {r["detector"] for r in payload["detectors"]} == {"mixed", "null"}


def test_all_runs_nab_skab_and_the_simulator_with_the_published_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make eval`: NAB (upstream, default over seeds, NAB's own result files in the same
    table), SKAB (with SKAB's published numbers), the simulator and a scenario."""
    from tests.detection_eval.synthetic import write_skab

    nab = tmp_path / "nab"
    data, windows = write_corpus(
        nab, {"one": [300], "two": [350, 450]}, length=10, windows_name="combined_windows.json"
    )
    corpus = load_corpus(data, read_windows(windows))
    write_result_files(nab / "results", "perfect", corpus, window_starts(corpus))
    monkeypatch.setenv("NAB_DIR", str(nab))
    monkeypatch.setenv("SKAB_DIR", str(write_skab(tmp_path / "skab", files=2)))
    out_dir = tmp_path / "out"
    args = ["all", "--output", str(out_dir), "--minutes", "60", "--machines", "5", "--jobs", "1"]
    args += ["--seeds", "1,2", "--sim-seeds", "3", "--scenarios", "restarts"]
    assert main([*args, "--scenario-minutes", "90"]) == 0
    out = capsys.readouterr().out
    assert "NAB's own result files" in out and "alerts as sent" in out
    assert "T-squared (published)" in out and "restarts: default" in out
    payload = json.loads((out_dir / "eval.json").read_text())
    means = payload["nab"]["seed_means"]
    assert set(means) == {"upstream", "default", "perfect"}
    assert means["default"]["standard"]["seeds"] == 2
    assert means["perfect"]["standard"]["mean"] == pytest.approx(100.0)
    assert set(payload["skab"]["summary"]) == {"upstream", "default", "every row"}
    pooled = {(r["scenario"], r["detector"]) for r in payload["simulator"]["pooled"]}
    assert pooled == {("standard", "upstream"), ("standard", "default"), ("restarts", "default")}
