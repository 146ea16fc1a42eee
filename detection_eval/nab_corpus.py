"""NAB's files on disk: data series, labelled windows, profiles, and per-detector result files.

NAB names every series by its path relative to the data folder (`realKnownCause/nyc_taxi.csv`),
the key of its windows in `combined_windows*.json`. Result files follow NAB's layout,
`<results>/<detector>/<category>/<detector>_<file>.csv` with the columns `timestamp, value,
anomaly_score, label, S(t)_<profile>...`, so NAB's own tools and ours can read each other's
output; files without the category folder (as in `shared/nab/results/`) are found too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from detection_eval.nab_scorer import PROBATION_PERCENT, CostMatrix, FileLayout

WindowLimits = list[tuple[pd.Timestamp, pd.Timestamp]]


def read_windows(path: Path) -> dict[str, WindowLimits]:
    """Labelled windows per file key, as NAB's `combined_windows.json` lists them."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read windows file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object of file -> [[start, end], ...]")
    windows: dict[str, WindowLimits] = {}
    for key, limits in raw.items():
        try:
            windows[key] = [(pd.Timestamp(start), pd.Timestamp(end)) for start, end in limits]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: bad window for {key}: {exc}") from exc
    return windows


def read_profiles(path: Path) -> dict[str, CostMatrix]:
    """NAB's `profiles.json`: profile name -> cost matrix."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return {name: CostMatrix.from_nab(entry) for name, entry in raw.items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read profiles file {path}: {exc}") from exc


def read_series(path: Path) -> pd.DataFrame:
    """A NAB data file: `timestamp, value` rows in file order (NAB never re-sorts them)."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    missing = {"timestamp", "value"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {sorted(missing)}; NAB files have timestamp,value"
        )
    try:
        timestamps = pd.to_datetime(frame["timestamp"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable timestamp: {exc}") from exc
    values = pd.to_numeric(frame["value"], errors="coerce")
    if values.isna().any():
        row = int(np.flatnonzero(values.isna())[0])
        raise ValueError(f"{path}: value on data row {row + 1} is not a number")
    return pd.DataFrame({"timestamp": timestamps, "value": values.astype(float)})


def window_rows(
    timestamps: pd.Series, limits: WindowLimits, name: str = "series"
) -> list[tuple[int, int]]:
    """Each window as its first and last row: the rows stamped within [start, end]."""
    stamps = timestamps.to_numpy()
    rows = []
    for start, end in limits:
        inside = np.flatnonzero((stamps >= start.to_datetime64()) & (stamps <= end.to_datetime64()))
        if not inside.size:
            raise ValueError(f"{name}: window {start} .. {end} covers no row of the data")
        rows.append((int(inside[0]), int(inside[-1])))
    return rows


@dataclass(frozen=True)
class NabFile:
    """One labelled series: its key, where it lives, its rows and its scoring layout."""

    key: str
    path: Path
    frame: pd.DataFrame
    layout: FileLayout


@dataclass(frozen=True)
class NabCorpus:
    """The labelled series found under a data folder (NAB scores them as one corpus)."""

    files: list[NabFile]
    missing: list[str] = field(default_factory=list)  # labelled but not found under the folder

    @property
    def layouts(self) -> list[FileLayout]:
        return [f.layout for f in self.files]


def locate(data_dir: Path, key: str) -> Path | None:
    """The data file for a key: `<dir>/<key>`, or `<dir>/<file name>` when given its category."""
    for candidate in (data_dir / key, data_dir / PurePosixPath(key).name):
        if candidate.is_file():
            return candidate
    return None


def load_corpus(
    data_dir: Path,
    windows: Mapping[str, WindowLimits],
    probation_percent: float = PROBATION_PERCENT,
) -> NabCorpus:
    """Every labelled file found under `data_dir`, in key order."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"data folder {data_dir} does not exist")
    files, missing = [], []
    for key in sorted(windows):
        path = locate(data_dir, key)
        if path is None:
            missing.append(key)
            continue
        frame = read_series(path)
        rows = window_rows(frame["timestamp"], windows[key], key)
        layout = FileLayout.build(key, len(frame), rows, probation_percent)
        files.append(NabFile(key=key, path=path, frame=frame, layout=layout))
    if not files:
        raise ValueError(f"none of the {len(windows)} labelled files is under {data_dir}")
    return NabCorpus(files=files, missing=missing)


def result_path(results_dir: Path, detector: str, key: str) -> Path:
    """Where NAB keeps a detector's output for one file.

    >>> result_path(Path("results"), "hst", "realKnownCause/nyc_taxi.csv").as_posix()
    'results/hst/realKnownCause/hst_nyc_taxi.csv'
    """
    key_path = PurePosixPath(key)
    return Path(results_dir, detector, *key_path.parent.parts, f"{detector}_{key_path.name}")


def write_result(
    path: Path,
    nab_file: NabFile,
    anomaly_scores: np.ndarray,
    per_row: Mapping[str, np.ndarray],
) -> None:
    """Write one NAB-format result file (`S(t)_<profile>` columns in the given order)."""
    frame = pd.DataFrame(
        {
            "timestamp": nab_file.frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "value": nab_file.frame["value"],
            "anomaly_score": anomaly_scores,
            "label": nab_file.layout.labels,
        }
    )
    for profile, column in per_row.items():
        frame[f"S(t)_{profile}"] = column
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def find_result(detector_dir: Path, detector: str, key: str) -> Path | None:
    """A detector's result file for `key`, in NAB's layout or flat in the detector folder."""
    name = f"{detector}_{PurePosixPath(key).name}"
    for candidate in (detector_dir / PurePosixPath(key).parent / name, detector_dir / name):
        if candidate.is_file():
            return candidate
    return None


def read_result_scores(
    detector_dir: Path, detector: str, files: Sequence[NabFile]
) -> dict[str, np.ndarray]:
    """The `anomaly_score` column of a detector's result file for each corpus file."""
    scores = {}
    for nab_file in files:
        path = find_result(detector_dir, detector, nab_file.key)
        if path is None:
            raise ValueError(f"no result file for {nab_file.key} under {detector_dir}")
        frame = pd.read_csv(path)
        if "anomaly_score" not in frame.columns:
            raise ValueError(f"{path}: no anomaly_score column")
        if len(frame) != nab_file.layout.n_rows:
            raise ValueError(
                f"{path}: {len(frame)} rows, the data file has {nab_file.layout.n_rows}"
            )
        scores[nab_file.key] = frame["anomaly_score"].to_numpy(dtype=float)
    return scores
