"""`python -m detection_eval nab|simulator|all`: the evaluation commands.

`all` is what `make eval` runs: NAB on the labelled subset in `../shared/nab` (or `$NAB_DIR`)
when it is there, upstream against default (beside the published detectors whose result files
the folder holds, scored the same way), then the simulator's fault schedule, each printed as a
table and written together as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from detection_eval import detectors
from detection_eval.nab_benchmark import (
    NabReport,
    evaluate_detector,
    format_alerts,
    format_files,
    format_seed_means,
    format_summary,
    report_for_scores,
    seed_means,
)
from detection_eval.nab_corpus import (
    load_corpus,
    read_profiles,
    read_result_scores,
    read_windows,
)
from detection_eval.nab_scorer import PROFILES
from detection_eval.settings import SETTINGS
from magic_common.envsettings import project_root

OUTPUT_DIR = project_root() / ".local" / "evaluate"


def nab_dir() -> Path:
    """Where the labelled NAB subset lives: `$NAB_DIR`, else `../shared/nab` beside the repo."""
    return SETTINGS.path("NAB_DIR")


def shared_windows(directory: Path) -> Path | None:
    """The windows file of a NAB folder (`combined_windows*.json`), if it has exactly one."""
    found = sorted(directory.glob("combined_windows*.json"))
    return found[0] if len(found) == 1 else None


def run_nab(
    data: Path,
    windows: Path,
    specs: Sequence[str],
    profiles_path: Path | None = None,
    results_dir: Path | None = None,
    scores_from: Path | None = None,
    jobs: int | None = None,
    seeds: Sequence[int] = (),
) -> list[NabReport]:
    """Score each detector (or each detector's existing result files) on the corpus.

    With `seeds`, each detector runs once per seed (`<name>@seed<n>`).
    """
    corpus = load_corpus(data, read_windows(windows))
    if profiles_path is None and (windows.parent / "profiles.json").is_file():
        profiles_path = windows.parent / "profiles.json"
    profiles = read_profiles(profiles_path) if profiles_path else PROFILES
    for key in corpus.missing:
        print(f"note: {key} is labelled but not under {data}; scoring without it", file=sys.stderr)
    reports = []
    for spec in specs:
        if scores_from is not None:
            scores = read_result_scores(scores_from / spec, spec, corpus.files)
            reports.append(
                report_for_scores(
                    corpus, spec, {"results": str(scores_from / spec)}, scores, profiles
                )
            )
            continue
        detector = detectors.resolve(spec)
        variants = [detectors.with_seed(detector, seed) for seed in seeds] or [detector]
        for variant in variants:
            reports.append(evaluate_detector(corpus, variant, profiles, results_dir, jobs))
    return reports


def nab_json(reports: Sequence[NabReport]) -> dict:
    """One report as `{"standard": .., ...}`; several as `{"detectors": [...], "seed_means"}`."""
    if len(reports) == 1:
        return reports[0].as_dict()
    return {"detectors": [r.as_dict() for r in reports], "seed_means": seed_means(reports)}


def parse_seeds(text: str) -> list[int]:
    """`1,2,5` or `1-4` -> seeds."""
    try:
        if "-" in text:
            low, high = (int(part) for part in text.split("-", 1))
            return list(range(low, high + 1))
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be like 1,2,3 or 1-4, got {text!r}") from None


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def command_nab(args: argparse.Namespace) -> int:
    reports = run_nab(
        args.data,
        args.windows,
        args.detector or ["default"],
        args.profiles,
        None if args.scores_from else args.results,
        args.scores_from,
        args.jobs,
        args.seeds or (),
    )
    print(format_summary(reports))
    if alerts := format_alerts(reports):
        print()
        print(alerts)
    if args.seeds:
        print()
        print(format_seed_means(reports))
    if args.detail or len(reports) == 1:
        for report in reports:
            print()
            print(format_files(report))
    if args.json:
        write_json(args.json, nab_json(reports))
    return 0


def command_simulator(args: argparse.Namespace) -> int:
    from detection_eval import simulator_eval

    report = simulator_eval.evaluate(
        minutes=args.minutes,
        faults=simulator_eval.parse_faults(args.faults),
        machines=args.machines,
        seed=args.seed,
        detector=args.detector,
    )
    print(simulator_eval.format_report(report))
    if args.json:
        write_json(args.json, report.as_dict())
    return 0


def command_all(args: argparse.Namespace) -> int:
    payload: dict = {}
    directory = nab_dir()
    windows = shared_windows(directory) if directory.is_dir() else None
    if windows is None:
        print(f"NAB: no labelled subset at {directory} (set NAB_DIR); skipping NAB\n")
    else:
        reports = run_nab(
            directory / "data",
            windows,
            ["upstream", "default"],
            results_dir=args.output / "nab-results",
            jobs=args.jobs,
        )
        published = sorted(p.name for p in (directory / "results").glob("*") if p.is_dir())
        references = (
            run_nab(directory / "data", windows, published, scores_from=directory / "results")
            if published
            else []
        )
        print(f"NAB ({windows.name}, {len(reports[0].profiles['standard'].files)} series)")
        print(format_summary(reports + references))
        if references:
            print(f"  ({', '.join(published)}: NAB's own result files, scored here)")
        print()
        print(format_alerts(reports))
        print()
        payload["nab"] = {r.detector: r.as_dict() for r in reports + references}
    from detection_eval import simulator_eval

    sim_reports = [
        simulator_eval.evaluate(
            minutes=args.minutes,
            faults=simulator_eval.parse_faults(simulator_eval.ALL_FAULTS_ARG),
            machines=args.machines,
            seed=args.seed,
            detector=name,
        )
        for name in ("upstream", "default")
    ]
    first = sim_reports[0]
    print(
        f"Simulator ({first.machines} machines x {first.minutes:g} min at 1 Hz, seed {first.seed}; "
        "recall / median latency per fault kind)"
    )
    print(simulator_eval.format_comparison(sim_reports))
    for report in sim_reports:
        print(f"  {report.detector}: {report.monitor}")
    payload["simulator"] = {report.detector: report.as_dict() for report in sim_reports}
    write_json(args.output / "eval.json", payload)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m detection_eval", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    nab = sub.add_parser("nab", help="score detectors on NAB-format labelled series")
    nab.add_argument("--data", type=Path, required=True, help="folder of timestamp,value CSVs")
    nab.add_argument("--windows", type=Path, required=True, help="NAB combined_windows JSON")
    nab.add_argument(
        "--profiles", type=Path, help="NAB profiles.json (default: beside --windows, else built in)"
    )
    nab.add_argument(
        "--detector",
        action="append",
        help="name (upstream, default, null), JSON file or inline JSON; repeat to compare",
    )
    nab.add_argument(
        "--results", type=Path, default=OUTPUT_DIR / "nab-results", help="where result files go"
    )
    nab.add_argument(
        "--scores-from",
        type=Path,
        help="score existing NAB result files <DIR>/<detector>/ instead of running detectors",
    )
    nab.add_argument(
        "--seeds", type=parse_seeds, help="run each detector with these seeds (1,2,3 or 1-4)"
    )
    nab.add_argument("--detail", action="store_true", help="per-file table for every detector")
    nab.add_argument("--json", type=Path, help="write scores and per-file detail here")
    nab.add_argument("--jobs", type=int, help="worker processes (default: one per core)")
    nab.set_defaults(run=command_nab)

    sim = sub.add_parser("simulator", help="scripted faults through the pipeline's detector")
    sim.add_argument("--minutes", type=float, default=240.0, help="simulated minutes per machine")
    sim.add_argument("--faults", default="overload,spike,bearing,drift,stuck")
    sim.add_argument("--machines", type=int, default=3)
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument("--detector", default="default")
    sim.add_argument("--json", type=Path)
    sim.set_defaults(run=command_simulator)

    everything = sub.add_parser("all", help="NAB subset (when present) and simulator, as make eval")
    everything.add_argument("--output", type=Path, default=OUTPUT_DIR)
    everything.add_argument("--minutes", type=float, default=240.0)
    everything.add_argument("--machines", type=int, default=3)
    everything.add_argument("--seed", type=int, default=42)
    everything.add_argument("--jobs", type=int)
    everything.set_defaults(run=command_all)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
