"""Candidate product configurations on every corpus at once: leave-one-category-out and ablations.

`python -m detection_eval loco` runs each candidate (a product configuration: `default`,
JSON `{"name": .., "product": {...}}`, or the base's ablations from `ablations`) on

- NAB (every series, every seed, one process pool): overall and per-category scores, and the
  leave-one-category-out folds (`loco`);
- SKAB with its protocol (`skab`), when the folder is there;
- the simulator's standard schedule (`simulator_eval`), seeds pooled;

and prints the fold table, then one row per candidate with the figures the issue's
acceptance names (NAB standard and low FP over seeds, SKAB F1 with FAR, the simulator's
lowest recall, slowest median latency and false episodes), then the detailed tables.
A candidate the detector cannot run (e.g. `without trees` while `n_trees=0` is refused) is
listed with the detector's reason and not run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detection_eval import loco, nab_summary
from detection_eval.ablations import Ablation, runnable
from detection_eval.detectors import load_spec
from detection_eval.nab_benchmark import NabReport, report_for_scores, run_detectors
from detection_eval.nab_corpus import load_corpus, read_profiles, read_windows
from detection_eval.nab_scorer import PROFILES
from detection_eval.product_detector import ProductSeriesDetector
from detection_eval.tables import text_table


@dataclass(frozen=True)
class Candidate:
    """A named product configuration (overrides on the defaults), or why it cannot run."""

    name: str
    overrides: dict
    unavailable: str | None = None

    @classmethod
    def from_spec(cls, spec: str) -> Candidate:
        """`default`, or product JSON `{"name": .., "product": {...}}` (inline or a file)."""
        if spec == "default":
            return cls("default", {})
        if spec == "previous":
            from fleetwatch.detector import NAMED_CONFIGS

            return cls("previous", dict(NAMED_CONFIGS["previous"]))
        raw, default_name = load_spec(spec)
        name = raw.pop("name", default_name)
        product = raw.pop("product", None)
        if not isinstance(product, dict) or raw:
            raise ValueError('a candidate is product JSON: {"name": .., "product": {...}}')
        return cls(name, product, runnable(product))

    @classmethod
    def from_ablation(cls, ablation: Ablation) -> Candidate:
        return cls(ablation.name, ablation.overrides, ablation.unavailable)

    def spec(self) -> str:
        return json.dumps({"name": self.name, "product": self.overrides})


@dataclass
class CandidatesResult:
    """Everything `loco` measured."""

    candidates: list[Candidate]
    seeds: list[int]
    folds: list[loco.Fold]
    nab: list[NabReport]
    skab: list = field(default_factory=list)  # skab.SkabScore
    simulator: list = field(default_factory=list)  # simulator_eval.SimulatorReport, pooled
    reference: str | None = None

    def summary_rows(self) -> list[tuple[str, list[str]]]:
        groups = nab_summary.groups(self.nab)
        skab_groups: dict[str, list] = {}
        for s in self.skab:
            skab_groups.setdefault(nab_summary.base_name(s.detector), []).append(s)
        sims = {r.detector: r for r in self.simulator}
        rows = []
        for c in self.candidates:
            if c.unavailable:
                rows.append((c.name, [f"unavailable: {c.unavailable}"] + [""] * 5))
                continue
            group = groups[c.name]
            cells = [
                nab_summary.profile_spread(group, "standard").cell(),
                nab_summary.profile_spread(group, "reward_low_FP_rate").cell(),
            ]
            if c.name in skab_groups:
                g = skab_groups[c.name]
                cells.append(
                    f"{np.mean([s.f1 for s in g]):.2f} / {100 * np.mean([s.far for s in g]):.1f}%"
                )
            else:
                cells.append("-")
            if c.name in sims:
                result = sims[c.name].result
                recalls = [k.recall for k in result.kinds.values() if k.recall is not None]
                medians = {kind: k.latency(0.5) for kind, k in result.kinds.items() if k.latencies}
                slowest = max(medians, key=lambda kind: medians[kind]) if medians else None
                cells += [
                    f"{100 * min(recalls):.0f}%" if recalls else "-",
                    f"{slowest} {medians[slowest]:.0f}" if slowest else "-",
                    str(result.false_episodes),
                ]
            else:
                cells += ["-"] * 3
            rows.append((c.name, cells))
        return rows

    def text(self) -> str:
        seeds = ",".join(map(str, self.seeds))
        parts = [
            f"Leave one category out (NAB standard; thresholds from the other categories; "
            f"seeds {seeds} averaged)",
            loco.format_folds(self.folds, self.reference),
            "",
            "Candidates on every corpus",
            text_table(
                "candidate",
                [
                    "NAB standard",
                    "NAB low FP",
                    "SKAB F1 / FAR",
                    "sim min recall",
                    "sim slowest median s",
                    "sim false ep.",
                ],
                self.summary_rows(),
            ),
            "",
            nab_summary.format_categories(self.nab, "standard"),
            "",
            nab_summary.format_quiet(self.nab),
        ]
        if self.skab:
            from detection_eval import skab

            parts += ["", skab.format_table(self.skab, published=False)]
        if self.simulator:
            from detection_eval import simulator_eval

            parts += ["", simulator_eval.format_comparison(self.simulator)]
        return "\n".join(parts)

    def as_dict(self) -> dict:
        return {
            "candidates": [vars(c) for c in self.candidates],
            "seeds": self.seeds,
            "folds": [f.as_dict() for f in self.folds],
            "nab": nab_summary.summary_json(self.nab),
            "skab": [s.as_dict() for s in self.skab],
            "simulator": [r.as_dict() for r in self.simulator],
        }


def evaluate(
    entries: Sequence[Candidate],
    nab: tuple[Path, Path],
    seeds: Sequence[int],
    skab: Path | None = None,
    simulator_seeds: Sequence[int] = (),
    simulator_machines: int = 5,
    simulator_minutes: float = 240.0,
    jobs: int | None = None,
    reference: str | None = None,
) -> CandidatesResult:
    """Run every available candidate on NAB (and SKAB, the simulator) and fold NAB by category."""
    names = [c.name for c in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must differ: {names}")
    available = [c for c in entries if not c.unavailable]
    if not available:
        raise ValueError(
            "no candidate can run: " + "; ".join(f"{c.name}: {c.unavailable}" for c in entries)
        )
    seeds = list(seeds) or [1]
    data, windows = nab
    corpus = load_corpus(data, read_windows(windows))
    profiles_path = windows.parent / "profiles.json"
    profiles = read_profiles(profiles_path) if profiles_path.is_file() else PROFILES
    variants = [
        ProductSeriesDetector(f"{c.name}@seed{s}", {**c.overrides, "seed": s})
        for c in available
        for s in seeds
    ]
    outputs = run_detectors(corpus, variants, jobs)
    reports = [
        report_for_scores(corpus, v.name, v.config, scores, profiles, alerts=alerts)
        for v, (scores, alerts) in zip(variants, outputs, strict=True)
    ]
    n = len(seeds)
    runs = {c.name: outputs[i * n : (i + 1) * n] for i, c in enumerate(available)}
    folds = loco.folds(corpus, runs, profiles["standard"])
    result = CandidatesResult(
        list(entries),
        seeds,
        folds,
        reports,
        reference=reference if reference in runs else None,
    )
    if skab is not None:
        from detection_eval import skab as skab_eval

        experiments = skab_eval.load_skab(skab)
        result.skab = skab_eval.evaluate(
            experiments,
            [
                skab_eval.SkabProduct(f"{c.name}@seed{s}", {**c.overrides, "seed": s})
                for c in available
                for s in seeds
            ],
            jobs,
        )
    if simulator_seeds:
        from detection_eval import simulator_eval

        kinds = simulator_eval.parse_faults(simulator_eval.ALL_FAULTS_ARG)
        runs_sim = [
            {
                "minutes": simulator_minutes,
                "faults": kinds,
                "machines": simulator_machines,
                "seed": seed,
                "detector": c.spec(),
            }
            for c in available
            for seed in simulator_seeds
        ]
        reports_sim = simulator_eval.evaluate_many(runs_sim, jobs)
        k = len(simulator_seeds)
        result.simulator = [
            simulator_eval.pooled(reports_sim[i : i + k]) for i in range(0, len(reports_sim), k)
        ]
    return result
