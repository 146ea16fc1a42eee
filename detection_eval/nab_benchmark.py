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
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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
from detection_eval.tables import text_table


@dataclass(frozen=True)
class ProfileResult:
    """One profile's outcome: the corpus threshold, raw and normalised scores, each file."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    normalised: float
    files: list[FileScore]

    def as_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "raw": self.raw,
            "null": self.null,
            "perfect": self.perfect,
            "normalised": self.normalised,
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
        name: _profile_result(corpus, name, scores, sweep(layouts, ordered, cost).best()[0], cost)
        for name, cost in profiles.items()
    }


def score_alerts(
    corpus: NabCorpus, alerts: Mapping[str, np.ndarray], profiles: Mapping[str, CostMatrix]
) -> dict[str, ProfileResult]:
    """Score alert rows as detections, at no swept threshold (1 = alert, 0 = none)."""
    as_scores = {key: np.asarray(rows, dtype=float) for key, rows in alerts.items()}
    return {
        name: _profile_result(corpus, name, as_scores, ALERT, cost)
        for name, cost in profiles.items()
    }


def _profile_result(
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
    )


# An alert row scores 1.0, others 0.0: a detection is a score at or above the threshold.
ALERT = 1.0


def run_detector(
    corpus: NabCorpus, detector, jobs: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The detector's anomaly scores and alert rows for every series, each from a fresh state."""
    jobs = jobs or min(len(corpus.files), os.cpu_count() or 1)
    # Longest series first, so the last worker to finish is not the one with the biggest file.
    files = sorted(corpus.files, key=lambda f: -f.layout.n_rows)
    values = [f.frame["value"].to_numpy() for f in files]
    if jobs <= 1:
        outputs = [detector.detect(v) for v in values]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            outputs = list(pool.map(detector.detect, values))
    scores = {f.key: np.asarray(out[0], dtype=float) for f, out in zip(files, outputs, strict=True)}
    alerts = {f.key: np.asarray(out[1], dtype=bool) for f, out in zip(files, outputs, strict=True)}
    return scores, alerts


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


def evaluate_detector(
    corpus: NabCorpus,
    detector,
    profiles: Mapping[str, CostMatrix],
    results_dir: Path | None = None,
    jobs: int | None = None,
) -> NabReport:
    """Run, score and (when `results_dir` is given) write one detector's NAB results."""
    scores, alerts = run_detector(corpus, detector, jobs)
    return report_for_scores(
        corpus, detector.name, detector_config(detector), scores, profiles, results_dir, alerts
    )


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


def format_summary(reports: list[NabReport]) -> str:
    """The comparison table: one row per detector, NAB's three normalised profile scores."""
    profiles = list(reports[0].profiles) if reports else []
    rows = [(r.detector, [f"{r.profiles[p].normalised:.1f}" for p in profiles]) for r in reports]
    return text_table("detector", profiles, rows)


def format_alerts(reports: list[NabReport]) -> str:
    """The alerts table: NAB's profiles scored on the rows each detector would alert on."""
    alerting = [r for r in reports if r.alerts is not None]
    if not alerting:
        return ""
    profiles = list(alerting[0].alerts)
    rows = [
        (
            r.detector,
            [f"{r.alerts[p].normalised:.1f}" for p in profiles] + [str(r.alert_count)],
        )
        for r in alerting
    ]
    return text_table("alerts as sent", [*profiles, "alerts"], rows)


def seed_means(reports: list[NabReport]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and spread of each profile's score over the seeds of each `<name>@seed<n>` group."""
    groups: dict[str, list[NabReport]] = {}
    for report in reports:
        base, marker, _ = report.detector.rpartition("@seed")
        if marker:
            groups.setdefault(base, []).append(report)
    return {
        base: {
            profile: {
                "mean": float(np.mean([r.profiles[profile].normalised for r in group])),
                "std": float(np.std([r.profiles[profile].normalised for r in group])),
                "seeds": len(group),
            }
            for profile in group[0].profiles
        }
        for base, group in groups.items()
    }


def format_seed_means(reports: list[NabReport]) -> str:
    """One row per detector: each profile's mean +- standard deviation over its seeds."""
    means = seed_means(reports)
    if not means:
        return ""
    profiles = list(next(iter(means.values())))
    rows = [
        (name, [f"{by[p]['mean']:.1f} +- {by[p]['std']:>4.1f}" for p in profiles])
        for name, by in means.items()
    ]
    return text_table("detector (seed mean)", profiles, rows)


def format_files(report: NabReport, profile: str = "standard") -> str:
    """Per-file detail for one profile at its corpus threshold."""
    result = report.profiles[profile]
    width = max(len(f.name) for f in result.files)
    lines = [
        f"{report.detector} / {profile}: threshold {result.threshold:.6g}, "
        f"raw {result.raw:.3f} (null {result.null:g}, perfect {result.perfect:g}), "
        f"score {result.normalised:.1f}",
        f"  {'file':<{width}}  {'score':>8}  {'TP':>6}  {'FP':>6}  {'FN':>6}",
    ]
    for f in result.files:
        lines.append(f"  {f.name:<{width}}  {f.score:>8.3f}  {f.tp:>6}  {f.fp:>6}  {f.fn:>6}")
    return "\n".join(lines)
