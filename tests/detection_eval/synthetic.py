"""Small synthetic corpora in the benchmarks' own layouts, written by the tests that need them.

- `write_corpus`: NAB layout (`data/<category>/<file>.csv`, windows JSON), flat noisy series
  at 5-minute steps with spikes inside labelled windows; `categories` puts files in several
  categories, and a file given no spikes is an anomaly-free one;
- `write_result_files`: another tool's NAB result files;
- `window_starts`: a perfect detector's rows;
- `write_skab`: SKAB layout (`data/other/<n>.csv`, `;`), eight sensors at 1 s with one joint
  fault per file, plus an `anomaly-free` recording the harness must skip.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from detection_eval import skab
from detection_eval.nab_corpus import NabCorpus


def write_corpus(
    root: Path,
    spike_rows: dict[str, list[int]],
    length: int = 1,
    windows_name: str = "windows.json",
) -> tuple[Path, Path]:
    """Flat series with a spike (`length` rows) per window, in NAB's `<category>/<file>.csv`
    layout; a name `category/file` picks the category (default `synthetic`)."""
    data = root / "data"
    windows: dict[str, list[list[str]]] = {}
    rng = np.random.default_rng(7)
    for key, rows in spike_rows.items():
        category, _, name = key.rpartition("/")
        category = category or "synthetic"
        n = 600
        stamps = pd.date_range("2024-01-01", periods=n, freq="5min")
        values = 10 + rng.normal(0, 0.1, n)
        windows[f"{category}/{name}.csv"] = []
        for row in rows:
            values[row : row + length] += 50
            start, end = stamps[row - 5], stamps[row + 24]
            windows[f"{category}/{name}.csv"].append([f"{start}.000000", f"{end}.000000"])
        path = data / category / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(
            path, index=False
        )
    windows_path = root / windows_name
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


ROWS = 900
FAULT = (600, 760)


def write_skab(root: Path, files: int = 3) -> Path:
    """Pump-like experiments: eight noisy sensors at 1 s, one fault per file where flow,
    pressure and current move together by many deviations; SKAB's `;` layout."""
    rng = np.random.default_rng(5)
    folder = root / "data" / "other"
    folder.mkdir(parents=True)
    free = root / "data" / "anomaly-free"
    free.mkdir(parents=True)
    for n in range(1, files + 1):
        values = rng.normal(0.0, 1.0, (ROWS, len(skab.SENSORS))) * 0.1 + np.arange(1, 9)
        labels = np.zeros(ROWS)
        start, end = FAULT[0] + 10 * n, FAULT[1] + 10 * n
        labels[start:end] = 1
        for column in ("Current", "Pressure", "Volume Flow RateRMS"):
            values[start:end, skab.SENSORS.index(column)] += 3.0
        frame = pd.DataFrame(values, columns=list(skab.SENSORS))
        frame.insert(
            0,
            "datetime",
            pd.date_range("2020-03-01 15:00:00", periods=ROWS, freq="1s").strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
        )
        frame["anomaly"] = labels
        frame["changepoint"] = 0.0
        frame.to_csv(folder / f"{n}.csv", sep=";", index=False)
        frame.assign(anomaly=0.0).to_csv(free / "anomaly-free.csv", sep=";", index=False)
    return root
