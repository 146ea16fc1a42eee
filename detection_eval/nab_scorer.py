"""NAB's scoring rules, re-implemented with NumPy so a whole corpus scores in milliseconds.

The Numenta Anomaly Benchmark (numenta/NAB, v1.1) judges a detector by where its detections fall
relative to labelled anomaly windows. This module reproduces its rules exactly (the published
per-row `S(t)_*` columns and per-file scores come out the same, see tests/evaluate), because a
number is only comparable with NAB's leaderboard when every rule matches:

- the first `min(floor(0.15 * n), 0.15 * 5000)` rows of a file are probationary: not scored;
- inside a window only the earliest detection counts, worth `tp * S(-(e - i + 1) / (e - s + 1))
  / S(-1)` with `S(y) = 2 / (1 + exp(5 y)) - 1` (-1 from y >= 3); a window without one costs `-fn`;
- a detection outside every window costs `fp * S(|e_k - i| / (width_k - 1))` after window k (so
  one just after a window is nearly free) and the full `-fp` before the first window;
- one threshold holds for the whole corpus: NAB sweeps every distinct anomaly score (rows with
  `score >= threshold` are detections) and keeps the best, the highest threshold on ties;
- scores normalise to 100 for a perfect detector and 0 for the null one (no detections).

NAB walks the rows in Python once per threshold candidate; here a file's row weights are computed
once (`FileLayout`) and the sweep over every threshold is one sort and one cumulative sum.

>>> layout = FileLayout.build("toy", 20, [(10, 14)])
>>> scores = np.zeros(20); scores[11] = 0.9
>>> round(score_file(layout, scores, 0.5, PROFILES["standard"]).score, 4)
0.9771
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROBATION_PERCENT = 0.15
# NAB caps the probationary period at 15% of 5000 rows, so long files do not lose more than 750.
PROBATION_CAP_ROWS = 5000
# The threshold NAB reports when it pays to detect nothing: above every anomaly score in [0, 1].
NO_DETECTION_THRESHOLD = 1.1


@dataclass(frozen=True)
class CostMatrix:
    """A NAB application profile: what a true positive earns and a miss or false alarm costs."""

    tp: float
    fp: float
    fn: float

    @classmethod
    def from_nab(cls, entry: dict) -> CostMatrix:
        """Read a profiles.json entry (`{"CostMatrix": {"tpWeight": .., ...}}`)."""
        matrix = entry["CostMatrix"]
        return cls(
            tp=float(matrix["tpWeight"]), fp=float(matrix["fpWeight"]), fn=float(matrix["fnWeight"])
        )


# NAB v1.1 config/profiles.json (tnWeight is unused by the scorer).
PROFILES: dict[str, CostMatrix] = {
    "standard": CostMatrix(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": CostMatrix(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": CostMatrix(tp=1.0, fp=0.11, fn=2.0),
}


def scaled_sigmoid(position: np.ndarray | float) -> np.ndarray:
    """NAB's reward curve: ~+0.987 at a window's left edge, 0 at its right edge, -> -1 after.

    >>> [round(float(v), 5) for v in scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.0]))]
    [0.98661, 0.84828, 0.0, -0.98661, -1.0]
    """
    y = np.asarray(position, dtype=float)
    with np.errstate(over="ignore"):
        curve = 2.0 / (1.0 + np.exp(5.0 * np.minimum(y, 3.0))) - 1.0
    return np.where(y >= 3.0, -1.0, curve)


MAX_TP = float(scaled_sigmoid(-1.0))


def probation_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """How many leading rows NAB leaves unscored while a detector learns.

    >>> probation_length(1000), probation_length(22695)
    (150, 750)
    """
    return int(min(math.floor(percent * n_rows), percent * PROBATION_CAP_ROWS))


@dataclass(frozen=True)
class FileLayout:
    """What NAB's rules make of one file before any detector runs: windows and row weights.

    `tp_reward[i]` is what a detection at row i earns for its window (before the profile's tp
    weight); `fp_penalty[i]` what it costs outside every window (before the fp weight, <= 0).
    """

    name: str
    n_rows: int
    probation: int
    windows: np.ndarray  # (k, 2) first and last row index of each window, inclusive
    window_of_row: np.ndarray  # window number per row, -1 outside every window
    tp_reward: np.ndarray
    fp_penalty: np.ndarray

    @classmethod
    def build(
        cls,
        name: str,
        n_rows: int,
        windows: Sequence[tuple[int, int]],
        probation_percent: float = PROBATION_PERCENT,
    ) -> FileLayout:
        """Lay out a file of `n_rows` rows with windows given as inclusive row ranges."""
        bounds = np.asarray(sorted(windows), dtype=np.int64).reshape(-1, 2)
        for k, (start, end) in enumerate(bounds):
            if not 0 <= start <= end < n_rows:
                raise ValueError(f"{name}: window rows {start}..{end} outside 0..{n_rows - 1}")
            if k and start <= bounds[k - 1][1]:
                raise ValueError(f"{name}: windows overlap at row {start}")
        rows = np.arange(n_rows)
        window_of_row = np.full(n_rows, -1, dtype=np.int64)
        tp_reward = np.zeros(n_rows)
        fp_penalty = np.full(n_rows, -1.0)  # before the first window: the full cost
        for k, (start, end) in enumerate(bounds):
            width = end - start + 1
            inside = slice(start, end + 1)
            window_of_row[inside] = k
            tp_reward[inside] = scaled_sigmoid(-(end - rows[inside] + 1) / width) / MAX_TP
            following = bounds[k + 1][0] if k + 1 < len(bounds) else n_rows
            after = slice(end + 1, following)
            fp_penalty[inside] = 0.0
            # NAB divides by width - 1; a one-row window would divide by zero there, so a false
            # positive after it is simply a full false positive.
            distance = (rows[after] - end) / (width - 1) if width > 1 else np.inf
            fp_penalty[after] = scaled_sigmoid(distance)
        return cls(
            name=name,
            n_rows=n_rows,
            probation=probation_length(n_rows, probation_percent),
            windows=bounds,
            window_of_row=window_of_row,
            tp_reward=tp_reward,
            fp_penalty=fp_penalty,
        )

    @property
    def labels(self) -> np.ndarray:
        """NAB's `label` column: 1 inside a window, else 0."""
        return (self.window_of_row >= 0).astype(np.int64)

    @property
    def scored_windows(self) -> np.ndarray:
        """Windows with at least one row after probation (NAB ignores the others)."""
        return self.windows[self.windows[:, 1] >= self.probation]


@dataclass(frozen=True)
class FileScore:
    """One file's result at one threshold, as in NAB's `<detector>_<profile>_scores.csv`."""

    name: str
    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    total: int
    per_row: np.ndarray  # NAB's S(t)_<profile> column

    def as_dict(self) -> dict:
        """The JSON/CSV row, without the per-row column."""
        return {
            "file": self.name,
            "threshold": self.threshold,
            "score": self.score,
            "tp": self.tp,
            "tn": self.tn,
            "fp": self.fp,
            "fn": self.fn,
            "total": self.total,
        }


def _checked(layout: FileLayout, anomaly_scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(anomaly_scores, dtype=float)
    if scores.shape != (layout.n_rows,):
        raise ValueError(f"{layout.name}: {scores.shape[0]} scores for {layout.n_rows} rows")
    bad = ~np.isfinite(scores) | (scores < 0.0) | (scores > 1.0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{layout.name}: anomaly scores must be in [0, 1]; row {row} is {scores[row]!r}"
        )
    return scores


def score_file(
    layout: FileLayout, anomaly_scores: np.ndarray, threshold: float, cost: CostMatrix
) -> FileScore:
    """Score one file at one threshold, with NAB's per-row `S(t)` column.

    `S(t)` holds each window's outcome on its first row (the earliest detection's reward, or
    `-fn`) and each false positive's cost on its own row, so the column sums to the file score.
    """
    scores = _checked(layout, anomaly_scores)
    scored = np.arange(layout.n_rows) >= layout.probation
    detected = scored & (scores >= threshold)
    inside = layout.window_of_row >= 0
    per_row = np.zeros(layout.n_rows)
    for start, end in layout.windows:
        if end < layout.probation:
            continue
        hits = np.flatnonzero(detected[start : end + 1])
        per_row[start] = cost.tp * layout.tp_reward[start + hits[0]] if hits.size else -cost.fn
    false_alarms = detected & ~inside
    per_row[false_alarms] = cost.fp * layout.fp_penalty[false_alarms]
    tp = int((detected & inside).sum())
    fp = int(false_alarms.sum())
    return FileScore(
        name=layout.name,
        threshold=float(threshold),
        score=float(per_row.sum()),
        tp=tp,
        tn=int((scored & ~inside).sum()) - fp,
        fp=fp,
        fn=int((scored & inside).sum()) - tp,
        total=layout.n_rows,
        per_row=per_row,
    )


@dataclass(frozen=True)
class ThresholdSweep:
    """Corpus score and row counts at every candidate threshold, highest threshold first."""

    thresholds: np.ndarray
    scores: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    def best(self) -> tuple[float, float]:
        """The threshold with the highest score (the highest such threshold on ties, as NAB)."""
        top = self.scores.max()
        index = int(np.flatnonzero(self.scores >= top - 1e-9 * max(1.0, abs(top)))[0])
        return float(self.thresholds[index]), float(self.scores[index])


def sweep(
    layouts: Sequence[FileLayout], anomaly_scores: Sequence[np.ndarray], cost: CostMatrix
) -> ThresholdSweep:
    """Score the corpus at every distinct anomaly score as threshold (NAB's optimiser).

    Lowering the threshold past a row's score adds that row's effect: a false positive's cost, or
    the amount by which it raises its window's best reward (the first detection in a window
    lifts it from `-fn`). Sorting all rows by score and summing those effects gives every
    threshold's corpus score at once.
    """
    if len(layouts) != len(anomaly_scores):
        raise ValueError("one score array per file is needed")
    event_scores, gains, is_tp, is_fp = [], [], [], []
    base = 0.0
    n_inside = n_outside = 0
    for layout, raw in zip(layouts, anomaly_scores, strict=True):
        scores = _checked(layout, raw)
        rows = np.arange(layout.probation, layout.n_rows)
        outside = rows[layout.window_of_row[rows] < 0]
        n_outside += len(outside)
        event_scores.append(scores[outside])
        gains.append(cost.fp * layout.fp_penalty[outside])
        is_tp.append(np.zeros(len(outside), dtype=bool))
        is_fp.append(np.ones(len(outside), dtype=bool))
        for start, end in layout.scored_windows:
            inside = np.arange(max(start, layout.probation), end + 1)
            n_inside += len(inside)
            base -= cost.fn
            inside = inside[np.argsort(-scores[inside], kind="stable")]
            best = np.maximum.accumulate(np.r_[-cost.fn, cost.tp * layout.tp_reward[inside]])
            event_scores.append(scores[inside])
            gains.append(np.diff(best))
            is_tp.append(np.ones(len(inside), dtype=bool))
            is_fp.append(np.zeros(len(inside), dtype=bool))
    all_scores = np.concatenate(event_scores)
    order = np.argsort(-all_scores, kind="stable")
    ordered = all_scores[order]
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], len(ordered) > 0])
    tp = np.r_[0, np.cumsum(np.concatenate(is_tp)[order])[ends]]
    fp = np.r_[0, np.cumsum(np.concatenate(is_fp)[order])[ends]]
    return ThresholdSweep(
        thresholds=np.r_[NO_DETECTION_THRESHOLD, ordered[ends]],
        scores=np.r_[base, base + np.cumsum(np.concatenate(gains)[order])[ends]],
        tp=tp,
        fp=fp,
        fn=n_inside - tp,
        tn=n_outside - fp,
    )


def perfect_score(layouts: Sequence[FileLayout], cost: CostMatrix) -> float:
    """What catching every window at its left edge earns: NAB counts every labelled window."""
    return cost.tp * sum(len(layout.windows) for layout in layouts)


def null_score(layouts: Sequence[FileLayout], cost: CostMatrix) -> float:
    """The null detector's raw score: every scored window missed, nothing else."""
    return -cost.fn * sum(len(layout.scored_windows) for layout in layouts)


def normalise(raw: float, layouts: Sequence[FileLayout], cost: CostMatrix) -> float:
    """NAB's final score: 100 * (raw - null) / (perfect - null).

    >>> layout = FileLayout.build("toy", 20, [(10, 14)])
    >>> normalise(-1.0, [layout], PROFILES["standard"]), normalise(1.0, [layout], PROFILES["standard"])
    (0.0, 100.0)
    """
    null = null_score(layouts, cost)
    perfect = perfect_score(layouts, cost)
    if perfect == null:
        raise ValueError("the corpus has no labelled windows to normalise against")
    return 100.0 * (raw - null) / (perfect - null)
