"""NAB reports summed up: seed groups, categories, quiet files, and the tables the CLI prints.

A detector run once per seed gives reports named `<name>@seed<n>`; they form one group, shown
as the mean with the lowest and highest seed (`48.4 [47.2, 49.6]`): the spread between seeds
is `max - min`. A report without a seed (a published detector's result files) is a group of
one. Every table has one row per group.

- overall: NAB's three profiles, normalised over the whole corpus;
- per category, per profile: each category's files at the corpus threshold, normalised over
  the category (a category without labelled windows, such as `artificialNoAnomaly`, shows its
  detection count instead: every detection there is false);
- quiet files: detections per file without any labelled window at the swept standard
  threshold, one count per seed;
- alerts as sent: the rows the detector would notify on, scored as they stand (per run).

>>> Spread.of([47.2, 49.6, 48.4]).cell()
'48.4 [47.2, 49.6]'
>>> Spread.of([29.5]).cell()
'29.5'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from detection_eval.nab_benchmark import NabReport
from detection_eval.tables import text_table


@dataclass(frozen=True)
class Spread:
    """A figure over seeds: mean, standard deviation, lowest and highest."""

    mean: float
    std: float
    low: float
    high: float
    seeds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        data = np.asarray(values, dtype=float)
        return cls(
            float(data.mean()), float(data.std()), float(data.min()), float(data.max()), len(data)
        )

    @property
    def spread(self) -> float:
        return self.high - self.low

    def cell(self, digits: int = 1) -> str:
        mean = f"{self.mean:.{digits}f}"
        if self.seeds == 1:
            return mean
        return f"{mean} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "std": self.std,
            "min": self.low,
            "max": self.high,
            "spread": self.spread,
            "seeds": self.seeds,
        }


def base_name(detector: str) -> str:
    """`default@seed3` -> `default`; a name without a seed is its own group."""
    base, marker, _ = detector.rpartition("@seed")
    return base if marker else detector


def groups(reports: Sequence[NabReport]) -> dict[str, list[NabReport]]:
    """Reports by detector, in the order first seen."""
    out: dict[str, list[NabReport]] = {}
    for report in reports:
        out.setdefault(base_name(report.detector), []).append(report)
    return out


def profile_spread(group: Sequence[NabReport], profile: str) -> Spread:
    return Spread.of([r.profiles[profile].normalised for r in group])


def category_spreads(group: Sequence[NabReport], profile: str) -> dict[str, Spread | None]:
    """Each category's normalised score over the group's seeds (None: no labelled window)."""
    categories = group[0].profiles[profile].categories
    return {
        name: None
        if categories[name].normalised is None
        else Spread.of([r.profiles[profile].categories[name].normalised for r in group])
        for name in categories
    }


def quiet_detections(group: Sequence[NabReport]) -> dict[str, list[int]]:
    """Per file without a labelled window: detections at the swept standard threshold, per seed."""
    files = group[0].profiles["standard"].quiet_detections
    return {key: [r.profiles["standard"].quiet_detections[key] for r in group] for key in files}


def seed_means(reports: Sequence[NabReport]) -> dict[str, dict]:
    """Per group and profile: the overall spread over seeds plus each category's."""
    return {
        name: {
            profile: {
                **profile_spread(group, profile).as_dict(),
                "categories": {
                    category: None if spread is None else spread.as_dict()
                    for category, spread in category_spreads(group, profile).items()
                },
            }
            for profile in group[0].profiles
        }
        for name, group in groups(reports).items()
    }


def summary_json(reports: Sequence[NabReport]) -> dict:
    """Everything for `--json`: every run in full, the seed summaries, the quiet files."""
    return {
        "detectors": [r.as_dict() for r in reports],
        "seed_means": seed_means(reports),
        "quiet_detections": {name: quiet_detections(g) for name, g in groups(reports).items()},
    }


def _label(name: str, group: Sequence[NabReport]) -> str:
    if len(group) == 1 and group[0].detector == name:
        return name
    seeds = [r.detector.rpartition("@seed")[2] for r in group]
    return f"{name} (seeds {','.join(seeds)})"


def format_overall(reports: Sequence[NabReport]) -> str:
    """One row per detector: each profile's score (seed mean [lowest, highest])."""
    if not reports:
        return ""
    profiles = list(reports[0].profiles)
    rows = [
        (_label(name, g), [profile_spread(g, p).cell() for p in profiles])
        for name, g in groups(reports).items()
    ]
    return text_table("detector", profiles, rows)


def format_categories(reports: Sequence[NabReport], profile: str = "standard") -> str:
    """One row per detector, one column per category (and overall) for one profile."""
    if not reports:
        return ""
    categories = list(reports[0].profiles[profile].categories)
    rows = []
    for name, group in groups(reports).items():
        spreads = category_spreads(group, profile)
        cells = []
        for category in categories:
            spread = spreads[category]
            if spread is None:
                detections = [r.profiles[profile].categories[category].detections for r in group]
                cells.append(f"{Spread.of(detections).mean:.0f} det")
            else:
                cells.append(spread.cell())
        rows.append((_label(name, group), [*cells, profile_spread(group, profile).cell()]))
    return text_table(f"{profile} by category", [*categories, "overall"], rows)


def format_quiet(reports: Sequence[NabReport]) -> str:
    """Detections per file without a labelled window (standard threshold), one per seed."""
    if not reports or not reports[0].profiles["standard"].quiet_detections:
        return ""
    files = list(reports[0].profiles["standard"].quiet_detections)
    rows = [
        (
            _label(name, g),
            ["/".join(str(c) for c in counts) for counts in quiet_detections(g).values()],
        )
        for name, g in groups(reports).items()
    ]
    names = [PurePosixPath(key).stem for key in files]
    return text_table("detections, no-anomaly files", names, rows)


def format_alerts(reports: Sequence[NabReport]) -> str:
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


def format_report(reports: Sequence[NabReport], detail: bool = False) -> str:
    """Every table of a NAB run, in the order the CLI prints them."""
    parts = [format_overall(reports)]
    profiles = list(reports[0].profiles) if reports else []
    parts += [format_categories(reports, p) for p in profiles]
    parts += [format_quiet(reports), format_alerts(reports)]
    if detail or len(reports) == 1:
        parts += [format_files(r) for r in reports]
    return "\n\n".join(part for part in parts if part)
