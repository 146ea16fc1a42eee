"""A NAB run end to end: detector over every series, result files, threshold sweep, final scores.

This is NAB's detect -> optimize -> score -> normalize sequence. The threshold is optimised per
profile over the whole corpus given. That does not make a subset's number optimistic: on the
`realKnownCause` subset NAB's own result files score numenta 57.8 and windowedGaussian 13.4,
against 70.1 and 39.6 published for all 58 series (README, "Detection quality").

Beside it, a detector's *alerts* (the rows it would notify on, `detect`) are scored as they
stand, at no swept threshold: NAB's sweep ranks the scores, the alerts are what a user gets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from detection_eval.nab_corpus import NabCorpus, result_path, write_result
from detection_eval.nab_scorer import (
    CostMatrix,
    FileScore,
    normalise,
    null_score,
    perfect_score,
    score_file,
    sweep,
)


@dataclass(frozen=True)
class CategoryScore:
    """One category's share of a profile result (files `<category>/<file>.csv`), at the
    corpus threshold: its raw score, null and perfect, and the normalised score (None for a
    category without any labelled window: nothing to normalise against, every detection there
    is a false one)."""

    raw: float
    null: float
    perfect: float
    normalised: float | None
    files: int
    detections: int  # rows at or above the threshold after probation

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass(frozen=True)
class ProfileResult:
    """One profile's outcome: the corpus threshold, raw and normalised scores, each file, each
    category, and the detections in every file without a labelled window."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    normalised: float
    files: list[FileScore]
    categories: dict[str, CategoryScore] = field(default_factory=dict)
    quiet_detections: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "raw": self.raw,
            "null": self.null,
            "perfect": self.perfect,
            "normalised": self.normalised,
            "categories": {name: c.as_dict() for name, c in self.categories.items()},
            "quiet_detections": self.quiet_detections,
            "files": [f.as_dict() for f in self.files],
        }


@dataclass(frozen=True)
class NabReport:
    """A detector's NAB scores on one corpus."""

    detector: str
    config: dict
    profiles: dict[str, ProfileResult]
    missing: list[str]
    alerts: dict[str, ProfileResult] | None = None  # the alerts scored as they stand
    alert_count: int = 0

    def as_dict(self) -> dict:
        """`{"standard": .., "reward_low_FP_rate": .., "reward_low_FN_rate": ..}` plus detail."""
        out = {
            **{name: result.normalised for name, result in self.profiles.items()},
            "detector": self.detector,
            "config": self.config,
            "files": sorted({f.name for r in self.profiles.values() for f in r.files}),
            "missing_files": self.missing,
            "profiles": {name: result.as_dict() for name, result in self.profiles.items()},
        }
        if self.alerts is not None:
            out["alerts"] = {
                **{name: result.normalised for name, result in self.alerts.items()},
                "count": self.alert_count,
                "profiles": {name: result.as_dict() for name, result in self.alerts.items()},
            }
        return out


def score_corpus(
    corpus: NabCorpus, scores: Mapping[str, np.ndarray], profiles: Mapping[str, CostMatrix]
) -> dict[str, ProfileResult]:
    """Optimise each profile's threshold over the corpus, then score every file at it."""
    layouts = corpus.layouts
    ordered = [scores[f.key] for f in corpus.files]
    return {
        name: profile_at(corpus, name, scores, sweep(layouts, ordered, cost).best()[0], cost)
        for name, cost in profiles.items()
    }


def score_alerts(
    corpus: NabCorpus, alerts: Mapping[str, np.ndarray], profiles: Mapping[str, CostMatrix]
) -> dict[str, ProfileResult]:
    """Score alert rows as detections, at no swept threshold (1 = alert, 0 = none)."""
    as_scores = {key: np.asarray(rows, dtype=float) for key, rows in alerts.items()}
    return {
        name: profile_at(corpus, name, as_scores, ALERT, cost) for name, cost in profiles.items()
    }


def profile_at(
    corpus: NabCorpus,
    name: str,
    scores: Mapping[str, np.ndarray],
    threshold: float,
    cost: CostMatrix,
) -> ProfileResult:
    layouts = corpus.layouts
    files = [score_file(f.layout, scores[f.key], threshold, cost) for f in corpus.files]
    raw = sum(f.score for f in files)
    return ProfileResult(
        profile=name,
        threshold=threshold,
        raw=raw,
        null=null_score(layouts, cost),
        perfect=perfect_score(layouts, cost),
        normalised=normalise(raw, layouts, cost),
        files=files,
        categories=category_scores(corpus, files, cost),
        quiet_detections={
            f.key: s.fp + s.tp
            for f, s in zip(corpus.files, files, strict=True)
            if not len(f.layout.windows)
        },
    )


def category_of(key: str) -> str:
    """A file's NAB category: the folder of its key (`.` for a key without one).

    >>> category_of("realKnownCause/nyc_taxi.csv"), category_of("nyc_taxi.csv")
    ('realKnownCause', '.')
    """
    return PurePosixPath(key).parent.as_posix()


def category_scores(
    corpus: NabCorpus, files: Sequence[FileScore], cost: CostMatrix
) -> dict[str, CategoryScore]:
    """Each category's files at the corpus threshold, normalised over that category alone."""
    groups: dict[str, list[int]] = {}
    for index, nab_file in enumerate(corpus.files):
        groups.setdefault(category_of(nab_file.key), []).append(index)
    out = {}
    for category, members in sorted(groups.items()):
        layouts = [corpus.files[i].layout for i in members]
        raw = sum(files[i].score for i in members)
        windows = sum(len(layout.windows) for layout in layouts)
        out[category] = CategoryScore(
            raw=raw,
            null=null_score(layouts, cost),
            perfect=perfect_score(layouts, cost),
            normalised=normalise(raw, layouts, cost) if windows else None,
            files=len(members),
            detections=sum(files[i].tp + files[i].fp for i in members),
        )
    return out


# An alert row scores 1.0, others 0.0: a detection is a score at or above the threshold.
ALERT = 1.0


Outputs = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


def _detect(task: tuple) -> tuple[np.ndarray, np.ndarray]:
    detector, values, timestamps = task
    return detector.detect(values, timestamps)


def run_detectors(corpus: NabCorpus, detectors: Sequence, jobs: int | None = None) -> list[Outputs]:
    """Each detector's anomaly scores and alert rows for every series, each from a fresh state,
    fed with the series' own timestamps. All (detector, series) runs share one process pool
    (`jobs` workers, default one per core), longest series first, so no worker idles while
    another still has a long file."""
    files = sorted(corpus.files, key=lambda f: -f.layout.n_rows)
    pairs = [(index, f) for f in files for index in range(len(detectors))]
    tasks = [
        (detectors[index], f.frame["value"].to_numpy(), f.frame["timestamp"].to_numpy())
        for index, f in pairs
    ]
    jobs = jobs or min(len(tasks), os.cpu_count() or 1)
    if jobs <= 1:
        outputs = [_detect(task) for task in tasks]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            outputs = list(pool.map(_detect, tasks))
    results: list[Outputs] = [({}, {}) for _ in detectors]
    for (index, nab_file), out in zip(pairs, outputs, strict=True):
        scores, alerts = results[index]
        scores[nab_file.key] = np.asarray(out[0], dtype=float)
        alerts[nab_file.key] = np.asarray(out[1], dtype=bool)
    return results


def write_results(
    results_dir: Path,
    detector: str,
    corpus: NabCorpus,
    scores: Mapping[str, np.ndarray],
    profiles: Mapping[str, ProfileResult],
) -> None:
    """NAB-format result files (with `S(t)_<profile>` at each profile's threshold) and score tables."""
    for index, nab_file in enumerate(corpus.files):
        per_row = {name: result.files[index].per_row for name, result in profiles.items()}
        write_result(
            result_path(results_dir, detector, nab_file.key),
            nab_file,
            scores[nab_file.key],
            per_row,
        )
    for name, result in profiles.items():
        path = Path(results_dir, detector, f"{detector}_{name}_scores.csv")
        lines = ["Detector,Profile,File,Threshold,Score,TP,TN,FP,FN,Total_Count"]
        for f in result.files:
            lines.append(
                f"{detector},{name},{f.name},{f.threshold!r},{f.score!r},"
                f"{f.tp},{f.tn},{f.fp},{f.fn},{f.total}"
            )
        totals = [
            sum(getattr(f, k) for f in result.files) for k in ("tp", "tn", "fp", "fn", "total")
        ]
        lines.append(f"Totals,,,,{result.raw!r}," + ",".join(str(t) for t in totals))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def evaluate_detectors(
    corpus: NabCorpus,
    detectors: Sequence,
    profiles: Mapping[str, CostMatrix],
    results_dir: Path | None = None,
    jobs: int | None = None,
) -> list[NabReport]:
    """Run, score and (when `results_dir` is given) write each detector's NAB results."""
    outputs = run_detectors(corpus, detectors, jobs)
    return [
        report_for_scores(corpus, d.name, detector_config(d), scores, profiles, results_dir, alerts)
        for d, (scores, alerts) in zip(detectors, outputs, strict=True)
    ]


def report_for_scores(
    corpus: NabCorpus,
    name: str,
    config: dict,
    scores: Mapping[str, np.ndarray],
    profiles: Mapping[str, CostMatrix],
    results_dir: Path | None = None,
    alerts: Mapping[str, np.ndarray] | None = None,
) -> NabReport:
    """Score anomaly scores that already exist (a detector run, or another tool's result
    files), and the detector's alert rows when it has them."""
    results = score_corpus(corpus, scores, profiles)
    if results_dir is not None:
        write_results(results_dir, name, corpus, scores, results)
    return NabReport(
        detector=name,
        config=config,
        profiles=results,
        missing=corpus.missing,
        alerts=None if alerts is None else score_alerts(corpus, alerts, profiles),
        alert_count=0 if alerts is None else int(sum(a.sum() for a in alerts.values())),
    )


def detector_config(detector) -> dict:
    config = detector.config
    return config.as_dict() if hasattr(config, "as_dict") else dict(config)
