"""SKAB (Skoltech Anomaly Benchmark) with its own protocol: the product's alerts on pump telemetry.

SKAB's files (`data/<group>/<n>.csv`, separator `;`) are experiments on a water-circulation
testbed sampled once a second, each with one labelled fault. Its outlier-detection protocol
(`../shared/skab-dev/README.md`): the first `TRAIN_ROWS` (400) rows of each file are its
training part; predictions on the remaining rows of all files are pooled into one confusion
matrix; F1 = TP / (TP + (FP + FN) / 2), FAR = FP / (FP + TN), MAR = FN / (FN + TP).

How the product runs it, changing only what the data forces:

- features = the eight sensor columns (`SENSORS`); every other setting is the product's default
  (or the `{"product": {...}}` overrides given). The default `driver` is `load`, which SKAB
  does not have: the `fit` view is then off (the detector ignores a driver that is not among
  its features), and the report says so. A configuration may name a SKAB column as driver.
- online from each file's own start, one fresh detector per file, fed with the file's own
  timestamps; no pre-training on `anomaly-free.csv` (an online detector learns from the
  first rows like everything else);
- a row counts as alerted when the detector marks it `is_anomaly` (above the threshold inside
  an episode: after threshold, persistence and episodes), i.e. what the product marks;
- beside the pooled F1, FAR and MAR: faults caught (a labelled fault with at least one alerted
  row in the scored part), episodes in the scored part and how many touch no fault, and the
  alerts the pipeline's episode tracker would post (cooldown applied).

Flagging every row gives F1 ~0.69 at FAR 100 %, so F1 is always printed beside FAR.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from detection_eval.detectors import BLOG_QUIET_ROWS, BLOG_THRESHOLD, hst_scores, load_spec
from detection_eval.product_detector import product_config, strictly_increasing
from detection_eval.tables import text_table

SENSORS: tuple[str, ...] = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
TRAIN_ROWS = 400
SKAB_OVERRIDES = {"features": SENSORS}

# SKAB's published predictions (offline models fitted on each file's first 400 rows), scored
# with this protocol on the 14 files of ../shared/skab-dev (its README): F1, FAR %, MAR %.
PUBLISHED: dict[str, tuple[float, float, float]] = {
    "Conv-AE": (0.82, 11.5, 22.8),
    "LSTM-AE": (0.80, 29.8, 16.4),
    "MSET": (0.79, 38.2, 12.8),
    "T-squared + Q (PCA)": (0.77, 26.3, 22.9),
    "T-squared": (0.73, 19.2, 32.8),
    "Isolation forest": (0.40, 4.7, 73.8),
}


@dataclass(frozen=True)
class SkabFile:
    """One experiment: its name (`other/3.csv`), timestamps, sensor values and labels."""

    name: str
    times: np.ndarray  # datetime64[ns]
    values: np.ndarray  # (rows, len(SENSORS))
    labels: np.ndarray  # bool per row

    @property
    def faults(self) -> list[tuple[int, int]]:
        """Labelled faults in the scored part: (first row, row after the last)."""
        scored = self.labels.copy()
        scored[:TRAIN_ROWS] = False
        edges = np.flatnonzero(np.diff(np.r_[0, scored.astype(np.int8), 0]))
        return [(int(a), int(b)) for a, b in edges.reshape(-1, 2)]


def read_skab_file(path: Path, name: str) -> SkabFile:
    """A SKAB experiment file; a missing column or a bad value is a clear error."""
    try:
        frame = pd.read_csv(path, sep=";")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    missing = {"datetime", "anomaly", *SENSORS} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; SKAB files have {SENSORS}")
    try:
        times = pd.to_datetime(frame["datetime"]).to_numpy("datetime64[ns]")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable datetime: {exc}") from exc
    numeric = frame[[*SENSORS, "anomaly"]].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        row = int(np.flatnonzero(numeric.isna().any(axis=1))[0])
        raise ValueError(f"{path}: a value on data row {row + 1} is not a number")
    return SkabFile(
        name=name,
        times=times,
        values=numeric[list(SENSORS)].to_numpy(float),
        labels=numeric["anomaly"].to_numpy() > 0,
    )


def _natural(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.as_posix()))


def load_skab(directory: Path) -> list[SkabFile]:
    """Every experiment under `<directory>/data` except the anomaly-free recording."""
    data = Path(directory) / "data"
    if not data.is_dir():
        raise ValueError(f"no SKAB data folder at {data}")
    paths = sorted(
        (p for p in data.rglob("*.csv") if "anomaly-free" not in p.relative_to(data).parts),
        key=lambda p: _natural(p.relative_to(data)),
    )
    if not paths:
        raise ValueError(f"no experiment files under {data}")
    return [read_skab_file(p, p.relative_to(data).as_posix()) for p in paths]


@dataclass(frozen=True)
class FileOutcome:
    """What a detector marked in one file: alerted rows, episodes (first, last row) and the
    alerts it would post."""

    alerted: np.ndarray
    episodes: list[tuple[int, int]]
    posted: int


def episodes_from(starts: np.ndarray, inside: np.ndarray) -> list[tuple[int, int]]:
    """Episodes as (first row, last row) from per-row start markers and membership.

    >>> episodes_from(np.array([0, 1, 0, 0, 1, 0]) > 0, np.array([0, 1, 1, 0, 1, 1]) > 0)
    [(1, 2), (4, 5)]
    """
    out = []
    for start in np.flatnonzero(starts):
        rest = np.flatnonzero(~inside[start + 1 :] | starts[start + 1 :])
        out.append((int(start), int(start + (rest[0] if len(rest) else len(inside) - start - 1))))
    return out


@dataclass(frozen=True)
class SkabProduct:
    """The product's `FleetDetector` on one experiment's eight sensors (one machine)."""

    name: str
    overrides: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config  # noqa: B018 - a bad setting fails before any run

    @property
    def config(self):
        return product_config(self.overrides, SKAB_OVERRIDES)

    def describe(self) -> dict:
        config = self.config
        return {
            "product": config.to_json(),
            "driver_active": config.driver in config.features,
        }

    def run(self, experiment: SkabFile) -> FileOutcome:
        from fleetwatch.detector import FleetDetector
        from fleetwatch.episodes import EpisodeTracker

        config = self.config
        frame = pd.DataFrame(experiment.values, columns=list(SENSORS))
        frame.insert(0, "time", pd.DatetimeIndex(strictly_increasing(experiment.times), tz="UTC"))
        frame.insert(0, "unique_id", "pump")
        scored = FleetDetector(config).score_frame(frame)
        events = EpisodeTracker(config.features, config.rule).update(scored)
        return FileOutcome(
            alerted=scored["is_anomaly"].to_numpy(bool),
            episodes=episodes_from(
                scored["episode_start"].to_numpy(bool), scored["in_episode"].to_numpy(bool)
            ),
            posted=sum(1 for e in events if e.kind == "opened"),
        )


@dataclass(frozen=True)
class SkabUpstream:
    """The blog's detector on SKAB: River Half-Space Trees (5 trees, height 2, window 250) over
    the eight sensors min-max scaled over the file, learn then score, every row scored above
    0.8 flagged; flags less than 60 rows apart form one episode (one alert)."""

    name: str = "upstream"
    seed: int = 1

    def describe(self) -> dict:
        return {"blog_hst": {"n_trees": 5, "height": 2, "window_size": 250, "seed": self.seed}}

    def run(self, experiment: SkabFile) -> FileOutcome:
        values = experiment.values
        low, span = values.min(axis=0), np.ptp(values, axis=0)
        unit = np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.0)
        scores = hst_scores(
            unit, n_trees=5, height=2, window_size=250, seed=self.seed, order="learn_then_score"
        )
        flags = scores > BLOG_THRESHOLD
        rows = np.flatnonzero(flags)
        episodes = []
        for row in rows:
            if episodes and row - episodes[-1][1] <= BLOG_QUIET_ROWS:
                episodes[-1] = (episodes[-1][0], int(row))
            else:
                episodes.append((int(row), int(row)))
        return FileOutcome(alerted=flags, episodes=episodes, posted=len(episodes))


@dataclass(frozen=True)
class EveryRow:
    """Flags every row: the trivial F1 (~0.69 on skab-dev) that F1 must always be read beside FAR."""

    name: str = "every row"

    def describe(self) -> dict:
        return {}

    def run(self, experiment: SkabFile) -> FileOutcome:
        n = len(experiment.labels)
        return FileOutcome(alerted=np.ones(n, bool), episodes=[(0, n - 1)], posted=1)


NAMED = {
    "upstream": SkabUpstream,
    "every-row": EveryRow,
    "default": lambda: SkabProduct("default"),
    "previous": lambda: SkabProduct("previous", _previous()),
}


def _previous() -> dict:
    """The product's defaults of state format 3 (`fleetwatch.detector.NAMED_CONFIGS`)."""
    from fleetwatch.detector import NAMED_CONFIGS

    return dict(NAMED_CONFIGS["previous"])


def resolve(spec: str):
    """`default`, `upstream`, `every-row`, or JSON `{"name": .., "product": {...}}` (or a file)."""
    if spec in NAMED:
        return NAMED[spec]()
    raw, default_name = load_spec(spec)
    name = raw.pop("name", default_name)
    product = raw.pop("product", None)
    raw.pop("clock", None)  # SKAB is always fed with its own timestamps
    if not isinstance(product, dict) or raw:
        raise ValueError('SKAB runs the product detector: give {"name": .., "product": {...}}')
    return SkabProduct(name, product)


def seeded(detector, seeds: Sequence[int]) -> list:
    """The detector once per seed, `<name>@seed<n>`; with one seed, once under its own name;
    a detector without a seed (`every-row`) once."""
    if not seeds or isinstance(detector, EveryRow):
        return [detector]
    out = []
    for seed in seeds:
        name = detector.name if len(seeds) == 1 else f"{detector.name}@seed{seed}"
        if isinstance(detector, SkabProduct):
            out.append(SkabProduct(name, {**detector.overrides, "seed": seed}))
        else:
            out.append(SkabUpstream(name, seed))
    return out


@dataclass(frozen=True)
class SkabScore:
    """A detector's pooled SKAB result."""

    detector: str
    config: dict
    tp: int
    fp: int
    fn: int
    tn: int
    faults: int
    caught: int
    episodes: int
    false_episodes: int
    posted: int
    delays: list[float]  # seconds from each caught fault's first row to its first alerted row
    files: dict[str, dict]

    @property
    def f1(self) -> float:
        denominator = self.tp + (self.fp + self.fn) / 2
        return self.tp / denominator if denominator else 0.0

    @property
    def far(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar(self) -> float:
        return self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0

    @property
    def median_delay(self) -> float | None:
        return float(np.median(self.delays)) if self.delays else None

    def as_dict(self) -> dict:
        return {
            "detector": self.detector,
            "config": self.config,
            "f1": self.f1,
            "far": self.far,
            "mar": self.mar,
            **{k: getattr(self, k) for k in ("tp", "fp", "fn", "tn", "faults", "caught")},
            "episodes": self.episodes,
            "false_episodes": self.false_episodes,
            "alerts_posted": self.posted,
            "median_delay_s": self.median_delay,
            "files": self.files,
        }


def score(detector, experiments: Sequence[SkabFile], outcomes: Sequence[FileOutcome]) -> SkabScore:
    """Pool the scored rows (after `TRAIN_ROWS`) of every file into one confusion matrix."""
    totals = dict.fromkeys(("tp", "fp", "fn", "tn", "faults", "caught"), 0)
    episodes = false_episodes = posted = 0
    delays: list[float] = []
    files = {}
    for experiment, outcome in zip(experiments, outcomes, strict=True):
        truth, alerted = experiment.labels[TRAIN_ROWS:], outcome.alerted[TRAIN_ROWS:]
        counts = {
            "tp": int((truth & alerted).sum()),
            "fp": int((~truth & alerted).sum()),
            "fn": int((truth & ~alerted).sum()),
            "tn": int((~truth & ~alerted).sum()),
        }
        faults = experiment.faults
        caught = 0
        for start, end in faults:
            hits = np.flatnonzero(outcome.alerted[start:end])
            if hits.size:
                caught += 1
                seconds = experiment.times[start + hits[0]] - experiment.times[start]
                delays.append(float(seconds / np.timedelta64(1, "s")))
        scored_episodes = [(a, b) for a, b in outcome.episodes if b >= TRAIN_ROWS]
        false = sum(1 for a, b in scored_episodes if not experiment.labels[a : b + 1].any())
        for key, value in counts.items():
            totals[key] += value
        totals["faults"] += len(faults)
        totals["caught"] += caught
        episodes += len(scored_episodes)
        false_episodes += false
        posted += outcome.posted
        files[experiment.name] = {
            **counts,
            "faults": len(faults),
            "caught": caught,
            "episodes": len(scored_episodes),
            "false_episodes": false,
        }
    return SkabScore(
        detector=detector.name,
        config=detector.describe(),
        **totals,
        episodes=episodes,
        false_episodes=false_episodes,
        posted=posted,
        delays=delays,
        files=files,
    )


def _run(task: tuple) -> FileOutcome:
    detector, experiment = task
    return detector.run(experiment)


def evaluate(
    experiments: Sequence[SkabFile], detectors: Sequence, jobs: int | None = None
) -> list[SkabScore]:
    """Run every detector on every experiment (one process pool) and score each."""
    tasks = [(d, e) for d in detectors for e in experiments]
    jobs = jobs or min(len(tasks), os.cpu_count() or 1)
    if jobs <= 1:
        outcomes = [_run(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            outcomes = list(pool.map(_run, tasks))
    n = len(experiments)
    return [score(d, experiments, outcomes[i * n : (i + 1) * n]) for i, d in enumerate(detectors)]


def _group(scores: Sequence[SkabScore]) -> dict[str, list[SkabScore]]:
    out: dict[str, list[SkabScore]] = {}
    for s in scores:
        base, marker, _ = s.detector.rpartition("@seed")
        out.setdefault(base if marker else s.detector, []).append(s)
    return out


def _cell(values: Sequence[float], fmt: str) -> str:
    mean = format(float(np.mean(values)), fmt)
    if len(values) == 1:
        return mean
    return f"{mean} [{format(min(values), fmt)}, {format(max(values), fmt)}]"


def summary(scores: Sequence[SkabScore]) -> dict[str, dict]:
    """Per detector (seed group): mean, lowest and highest of F1, FAR and MAR over seeds."""
    out = {}
    for name, group in _group(scores).items():
        out[name] = {
            metric: {
                "mean": float(np.mean([getattr(s, metric) for s in group])),
                "min": float(min(getattr(s, metric) for s in group)),
                "max": float(max(getattr(s, metric) for s in group)),
                "seeds": len(group),
            }
            for metric in ("f1", "far", "mar")
        }
    return out


def format_table(scores: Sequence[SkabScore], published: bool = True) -> str:
    """One row per detector (seed mean [lowest, highest]), SKAB's published models below."""
    rows = []
    for name, group in _group(scores).items():
        seeds = [s.detector.rpartition("@seed")[2] for s in group]
        label = name if len(group) == 1 else f"{name} (seeds {','.join(seeds)})"
        delays = [s.median_delay for s in group if s.median_delay is not None]
        rows.append(
            (
                label,
                [
                    _cell([s.f1 for s in group], ".2f"),
                    _cell([100 * s.far for s in group], ".1f"),
                    _cell([100 * s.mar for s in group], ".1f"),
                    _cell([s.caught for s in group], ".0f") + f" of {group[0].faults}",
                    _cell([s.episodes for s in group], ".0f"),
                    _cell([s.false_episodes for s in group], ".0f"),
                    _cell(delays, ".0f") if delays else "-",
                ],
            )
        )
    if published:
        for name, (f1, far, mar) in PUBLISHED.items():
            rows.append(
                (f"{name} (published)", [f"{f1:.2f}", f"{far:.1f}", f"{mar:.1f}"] + ["-"] * 4)
            )
    columns = ["F1", "FAR %", "MAR %", "faults caught", "episodes", "false ep.", "delay s"]
    return text_table("SKAB detector", columns, rows)


def describe_driver(scores: Sequence[SkabScore]) -> list[str]:
    """A line per product configuration saying which driver its fit view used, if any."""
    lines = []
    for name, group in _group(scores).items():
        product = group[0].config.get("product")
        if product is None:
            continue
        driver = product.get("driver")
        state = (
            "active" if group[0].config.get("driver_active") else "not a SKAB column: fit view off"
        )
        lines.append(f"  {name}: driver {driver!r} ({state})")
    return lines
