"""`python -m detection_eval nab|skab|simulator|loco|all`: the evaluation commands.

Each prints its tables and, with `--json PATH`, writes everything it measured. `all` is what
`make eval` runs: NAB on `$NAB_DIR` (default `../shared/nab-dev`) and SKAB on `$SKAB_DIR`
(default `../shared/skab-dev`), each skipped when absent, upstream and default over seeds 1-4
beside the published detectors; then the simulator's standard schedule (upstream and default)
and its daily-pattern and restart scenarios (default), seeds 42, 1 and 7 pooled. `loco` is the
leave-one-category-out and ablation run (`make eval-loco`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from detection_eval import detectors, nab_summary, scenarios
from detection_eval.nab_benchmark import NabReport, evaluate_detectors, report_for_scores
from detection_eval.nab_corpus import (
    NabCorpus,
    load_corpus,
    read_profiles,
    read_result_scores,
    read_windows,
)
from detection_eval.nab_scorer import PROFILES
from detection_eval.settings import SETTINGS
from magic_common.envsettings import project_root

OUTPUT_DIR = project_root() / ".local" / "evaluate"
NAB_SEEDS = "1-4"
SIM_SEEDS = "42,1,7"


def nab_dir() -> Path:
    """Where the labelled NAB series live: `$NAB_DIR`, else `../shared/nab-dev` beside the repo."""
    return SETTINGS.path("NAB_DIR")


def skab_dir() -> Path:
    """Where the SKAB experiments live: `$SKAB_DIR`, else `../shared/skab-dev` beside the repo."""
    return SETTINGS.path("SKAB_DIR")


def shared_windows(directory: Path) -> Path | None:
    """The windows file of a NAB folder (`combined_windows*.json`), if it has exactly one."""
    found = sorted(directory.glob("combined_windows*.json"))
    return found[0] if len(found) == 1 else None


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


# --- NAB -----------------------------------------------------------------------------------


def nab_corpus(data: Path, windows: Path) -> NabCorpus:
    corpus = load_corpus(data, read_windows(windows))
    for key in corpus.missing:
        print(f"note: {key} is labelled but not under {data}; scoring without it", file=sys.stderr)
    return corpus


def nab_profiles(windows: Path, profiles_path: Path | None = None) -> dict:
    if profiles_path is None and (windows.parent / "profiles.json").is_file():
        profiles_path = windows.parent / "profiles.json"
    return read_profiles(profiles_path) if profiles_path else PROFILES


def split_published(specs: Sequence[str], scores_from: Path | None) -> tuple[list[str], list[str]]:
    """(published names to read from `scores_from`, specs to run). A spec naming a folder under
    `scores_from` is read from it; when no spec does, every folder there is."""
    if scores_from is None:
        return [], list(specs) or ["default"]
    if not scores_from.is_dir():
        raise ValueError(f"--scores-from {scores_from} is not a folder")
    folders = sorted(p.name for p in scores_from.iterdir() if p.is_dir())
    named = [s for s in specs if s in folders]
    return named or folders, [s for s in specs if s not in folders]


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
    """Run each detector (once per seed, `<name>@seed<n>`; seedless ones once) and score it,
    then score the published result files named or found under `scores_from`."""
    corpus = nab_corpus(data, windows)
    profiles = nab_profiles(windows, profiles_path)
    published, to_run = split_published(specs, scores_from)
    variants = []
    for spec in to_run:
        detector = detectors.resolve(spec)
        variants += detectors.seeded(detector, seeds)
    reports = evaluate_detectors(corpus, variants, profiles, results_dir, jobs) if variants else []
    for name in published:
        assert scores_from is not None
        scores = read_result_scores(scores_from / name, name, corpus.files)
        reports.append(
            report_for_scores(corpus, name, {"results": str(scores_from / name)}, scores, profiles)
        )
    return reports


def nab_json(reports: Sequence[NabReport]) -> dict:
    """One report as `{"standard": .., ...}`; several as `{"detectors": [...], "seed_means"...}`."""
    if len(reports) == 1:
        return reports[0].as_dict()
    return nab_summary.summary_json(reports)


def command_nab(args: argparse.Namespace) -> int:
    reports = run_nab(
        args.data,
        args.windows,
        args.detector or [],
        args.profiles,
        args.results,
        args.scores_from,
        args.jobs,
        args.seeds,
    )
    print(nab_summary.format_report(reports, args.detail))
    if args.json:
        write_json(args.json, nab_json(reports))
    return 0


# --- SKAB ----------------------------------------------------------------------------------


def run_skab(directory: Path, specs: Sequence[str], seeds: Sequence[int], jobs: int | None):
    from detection_eval import skab

    experiments = skab.load_skab(directory)
    variants = []
    for spec in specs:
        detector = skab.resolve(spec)
        variants += skab.seeded(detector, seeds)
    return skab.evaluate(experiments, variants, jobs)


def skab_text(scores, directory: Path) -> str:
    from detection_eval import skab

    files = len(scores[0].files) if scores else 0
    lines = [
        f"SKAB ({directory}, {files} experiments; rows after the first {skab.TRAIN_ROWS} pooled; "
        "seed mean [lowest, highest])",
        skab.format_table(scores),
        *skab.describe_driver(scores),
    ]
    return "\n".join(lines)


def skab_json(scores) -> dict:
    from detection_eval import skab

    return {
        "runs": [s.as_dict() for s in scores],
        "summary": skab.summary(scores),
        "published": {
            name: {"f1": f1, "far": far / 100, "mar": mar / 100}
            for name, (f1, far, mar) in skab.PUBLISHED.items()
        },
    }


def command_skab(args: argparse.Namespace) -> int:
    scores = run_skab(args.data, args.detector or ["default"], args.seeds, args.jobs)
    print(skab_text(scores, args.data))
    if args.json:
        write_json(args.json, skab_json(scores))
    return 0


# --- simulator -----------------------------------------------------------------------------


def run_simulator(
    scenario_names: Sequence[str],
    specs: Sequence[str],
    seeds: Sequence[int],
    machines: int,
    minutes: float | None,
    faults: str,
    jobs: int | None,
):
    """Every (scenario, detector) pooled over the seeds; the per-seed reports too."""
    from detection_eval import simulator_eval

    kinds = simulator_eval.parse_faults(faults)
    runs = [
        {
            "scenario": scenarios.check_scenario(name),
            "minutes": minutes or scenarios.DEFAULT_MINUTES[name],
            "faults": kinds,
            "machines": machines,
            "seed": seed,
            "detector": spec,
        }
        for name in scenario_names
        for spec in specs
        for seed in seeds
    ]
    reports = simulator_eval.evaluate_many(runs, jobs)
    n = len(seeds)
    return [simulator_eval.pooled(reports[i : i + n]) for i in range(0, len(reports), n)], reports


def simulator_text(pooled_reports) -> str:
    from detection_eval import simulator_eval

    lines = []
    for report in pooled_reports:
        seeds = report.seed if isinstance(report.seed, list) else [report.seed]
        lines.append(
            f"  {report.scenario}: {report.machines} machines x {report.minutes:g} min at 1 Hz, "
            f"seeds {','.join(map(str, seeds))} pooled; {scenarios.SCENARIOS[report.scenario]}"
            + (f"; {report.outages} restarts" if report.outages else "")
        )
    lines = list(dict.fromkeys(lines))
    lines.append(simulator_eval.format_comparison(pooled_reports))
    lines += [f"  {r.scenario}: {r.detector}: {r.monitor}" for r in pooled_reports]
    return "\n".join(dict.fromkeys(lines))


def simulator_json(pooled_reports, reports) -> dict:
    return {
        "pooled": [r.as_dict() for r in pooled_reports],
        "runs": [r.as_dict() for r in reports],
    }


def command_simulator(args: argparse.Namespace) -> int:
    pooled_reports, reports = run_simulator(
        args.scenario or ["standard"],
        args.detector or ["default"],
        args.seeds,
        args.machines,
        args.minutes,
        args.faults,
        args.jobs,
    )
    if len(reports) == 1:
        from detection_eval import simulator_eval

        print(simulator_eval.format_report(reports[0]))
        if args.json:
            write_json(args.json, reports[0].as_dict())
        return 0
    print("Simulator: recall / median latency (s) per fault kind, false episodes")
    print(simulator_text(pooled_reports))
    if args.json:
        write_json(args.json, simulator_json(pooled_reports, reports))
    return 0


# --- leave one category out, ablations ----------------------------------------------------


def command_loco(args: argparse.Namespace) -> int:
    from detection_eval import ablations, candidates

    data, windows = nab_paths(args)
    base = candidates.Candidate.from_spec(args.base)
    entries = [candidates.Candidate.from_spec(s) for s in args.candidate or []]
    if args.ablate or not entries:
        entries += [
            candidates.Candidate.from_ablation(a)
            for a in ablations.ablations(base.overrides, base.name)
        ]
    skab_path = args.skab if args.skab is not None else skab_dir()
    result = candidates.evaluate(
        entries,
        nab=(data, windows),
        seeds=args.seeds,
        skab=skab_path if (skab_path / "data").is_dir() else None,
        simulator_seeds=args.sim_seeds,
        simulator_machines=args.machines,
        simulator_minutes=args.minutes,
        jobs=args.jobs,
        reference=base.name,
    )
    print(result.text())
    if args.json:
        write_json(args.json, result.as_dict())
    return 0


def nab_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    directory = nab_dir()
    data = args.data or directory / "data"
    windows = args.windows or shared_windows(directory)
    if windows is None:
        raise ValueError(f"no windows file: give --windows (none found in {directory})")
    return data, windows


# --- everything ----------------------------------------------------------------------------


def command_all(args: argparse.Namespace) -> int:
    payload: dict = {}
    directory = nab_dir()
    windows = shared_windows(directory) if directory.is_dir() else None
    if windows is None:
        print(f"NAB: no labelled series at {directory} (set NAB_DIR); skipping NAB\n")
    else:
        scores_from = directory / "results" if (directory / "results").is_dir() else None
        reports = run_nab(
            directory / "data",
            windows,
            ["upstream", "default"],
            results_dir=args.output / "nab-results",
            jobs=args.jobs,
            seeds=args.seeds,
        )
        if scores_from is not None:
            reports += run_nab(directory / "data", windows, [], scores_from=scores_from)
        files = len(reports[0].profiles["standard"].files)
        print(f"NAB ({directory}, {windows.name}, {files} series; seed mean [lowest, highest])")
        print(nab_summary.format_report(reports))
        if scores_from is not None:
            published = sorted(p.name for p in scores_from.iterdir() if p.is_dir())
            print(f"  ({', '.join(published)}: NAB's own result files, scored here)")
        print()
        payload["nab"] = nab_summary.summary_json(reports)
    skab_path = skab_dir()
    if not (skab_path / "data").is_dir():
        print(f"SKAB: no experiments at {skab_path} (set SKAB_DIR); skipping SKAB\n")
    else:
        scores = run_skab(skab_path, ["upstream", "default", "every-row"], args.seeds, args.jobs)
        print(skab_text(scores, skab_path))
        print()
        payload["skab"] = skab_json(scores)
    pooled_reports, reports = run_simulator(
        ["standard"],
        ["upstream", "default"],
        args.sim_seeds,
        args.machines,
        args.minutes,
        ALL_FAULTS,
        args.jobs,
    )
    if args.scenarios:
        more, more_runs = run_simulator(
            args.scenarios,
            ["default"],
            args.sim_seeds,
            args.machines,
            args.scenario_minutes,
            ALL_FAULTS,
            args.jobs,
        )
        pooled_reports, reports = pooled_reports + more, reports + more_runs
    print("Simulator: recall / median latency (s) per fault kind, false episodes")
    print(simulator_text(pooled_reports))
    payload["simulator"] = simulator_json(pooled_reports, reports)
    write_json(args.output / "eval.json", payload)
    return 0


ALL_FAULTS = "overload,spike,bearing,drift,stuck"


def parse_scenarios(text: str) -> list[str]:
    """`daily,restarts` -> scenario names; `none` or empty -> none."""
    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    for name in names:
        if name not in scenarios.SCENARIOS:
            raise argparse.ArgumentTypeError(
                f"unknown scenario {name!r}; one of {', '.join(scenarios.SCENARIOS)}"
            )
    return names


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m detection_eval", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    seeds_help = "seeds to run every detector with (1,2,3 or 1-4; default %(default)s)"

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
        help="also score existing NAB result files <DIR>/<detector>/ (all, or those --detector names)",
    )
    nab.add_argument("--seeds", type=parse_seeds, default=parse_seeds(NAB_SEEDS), help=seeds_help)
    nab.add_argument("--detail", action="store_true", help="per-file table for every detector")
    nab.add_argument("--json", type=Path, help="write scores and per-file detail here")
    nab.add_argument("--jobs", type=int, help="worker processes (default: one per core)")
    nab.set_defaults(run=command_nab)

    skab = sub.add_parser("skab", help="the product's alerts on SKAB with SKAB's protocol")
    skab.add_argument("--data", type=Path, default=None, help="SKAB folder (default $SKAB_DIR)")
    skab.add_argument(
        "--detector",
        action="append",
        help='default, upstream, every-row, or JSON {"name": .., "product": {...}}; repeat',
    )
    skab.add_argument("--seeds", type=parse_seeds, default=parse_seeds(NAB_SEEDS), help=seeds_help)
    skab.add_argument("--json", type=Path)
    skab.add_argument("--jobs", type=int)
    skab.set_defaults(run=command_skab)

    sim = sub.add_parser("simulator", help="scripted faults through the pipeline's detector")
    sim.add_argument(
        "--scenario",
        action="append",
        choices=list(scenarios.SCENARIOS),
        help="standard (default), daily, restarts; repeat",
    )
    sim.add_argument(
        "--minutes", type=float, help="simulated minutes per machine (default: the scenario's)"
    )
    sim.add_argument("--faults", default=ALL_FAULTS)
    sim.add_argument("--machines", type=int, default=5)
    sim.add_argument("--seeds", type=parse_seeds, default=parse_seeds(SIM_SEEDS), help=seeds_help)
    sim.add_argument("--detector", action="append", help="default, upstream or JSON; repeat")
    sim.add_argument("--json", type=Path)
    sim.add_argument("--jobs", type=int)
    sim.set_defaults(run=command_simulator)

    loco = sub.add_parser(
        "loco", help="leave-one-category-out on NAB, and candidates/ablations on every corpus"
    )
    loco.add_argument("--data", type=Path, help="NAB data folder (default $NAB_DIR/data)")
    loco.add_argument("--windows", type=Path, help="windows file (default: in $NAB_DIR)")
    loco.add_argument(
        "--candidate", action="append", help='product JSON {"name": .., "product": {...}}; repeat'
    )
    loco.add_argument(
        "--base",
        default="default",
        help="configuration whose ablations are candidates (default, or product JSON)",
    )
    loco.add_argument(
        "--ablate", action="store_true", help="add the base's ablations to given candidates"
    )
    loco.add_argument("--seeds", type=parse_seeds, default=parse_seeds(NAB_SEEDS), help=seeds_help)
    loco.add_argument(
        "--skab", type=Path, help="SKAB folder (default $SKAB_DIR; skipped if absent)"
    )
    loco.add_argument(
        "--sim-seeds", type=parse_seeds, default=parse_seeds(SIM_SEEDS), help="simulator seeds"
    )
    loco.add_argument("--machines", type=int, default=5)
    loco.add_argument("--minutes", type=float, default=240.0)
    loco.add_argument("--json", type=Path)
    loco.add_argument("--jobs", type=int)
    loco.set_defaults(run=command_loco)

    everything = sub.add_parser("all", help="NAB, SKAB, simulator and scenarios, as make eval")
    everything.add_argument("--output", type=Path, default=OUTPUT_DIR)
    everything.add_argument(
        "--seeds", type=parse_seeds, default=parse_seeds(NAB_SEEDS), help="NAB and SKAB seeds"
    )
    everything.add_argument(
        "--sim-seeds", type=parse_seeds, default=parse_seeds(SIM_SEEDS), help="simulator seeds"
    )
    everything.add_argument("--minutes", type=float, default=240.0)
    everything.add_argument("--machines", type=int, default=5)
    everything.add_argument(
        "--scenarios",
        type=parse_scenarios,
        default=parse_scenarios("daily,restarts"),
        help="simulator scenarios besides the standard one (none to skip)",
    )
    everything.add_argument(
        "--scenario-minutes", type=float, default=None, help="default: each scenario's (48 h)"
    )
    everything.add_argument("--jobs", type=int)
    everything.set_defaults(run=command_all)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "command", None) == "skab" and args.data is None:
        args.data = skab_dir()
    try:
        return args.run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
