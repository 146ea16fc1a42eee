"""Detectors the NAB harness can run, by name or from a JSON configuration.

NAB scores a detector's continuous anomaly score (it sweeps its own threshold), so a detector
here maps one series to one score in [0, 1] per row, starting fresh on every series. A JSON
configuration makes tuning one command: `--detector '{"product": {"n_trees": 50}}'` changes the
product's detector; `--detector '{"views": ["abs_diff"], "scaling": "ewm_zscore"}'` (or a file)
configures the experimental series detector below (keys not given take its defaults).

Named entries:
- `upstream`: the blog's detector, River Half-Space Trees (5 trees, height 2, window 250,
  seed 1) on the value min-max scaled over the whole series, learn then score.
- `default`: the product's own detector (`fleetwatch.detector.FleetDetector` with its default
  configuration, applied to the series' single value column; see `product_detector`).
- `null`: no detections; scores 0 by definition and checks the normalisation.

Every detector also says which rows it would *alert* on (`detect`): the product, each alert
its episode tracker would post (threshold, persistence, cooldown); the series detectors, the
blog's rule (points above 0.8, grouped while they come less than 60 rows apart). NAB scores
those alerts as they stand (no sweep): what a user would receive, beside NAB's
threshold-free ranking of the scores.

>>> config = SeriesDetectorConfig.from_mapping({"n_trees": 25, "height": 10})
>>> config.n_trees, config.height, config.window_size
(25, 10, 250)
>>> resolve("upstream").config.scaling
'global_minmax'
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from detection_eval.product_detector import ProductSeriesDetector
from detection_eval.series_views import SCALINGS, VIEWS, scale, view
from detection_eval.zscore import rolling_abs_z, squash

# The same names as fleetwatch.hst.ORDERS: the blog learned a point before scoring it.
ORDERS = ("learn_then_score", "score_then_learn")
ENGINES = ("auto", "river", "numpy")
KINDS = ("hst", "zscore")
# The blog flagged every point scored above this (no persistence, no episodes); its flags are
# grouped as the simulator evaluation groups them (`pipeline_monitor.QUIET_SECONDS`, one row
# per second), which is kinder to it than one message per point.
BLOG_THRESHOLD = 0.8
BLOG_QUIET_ROWS = 60


@dataclass(frozen=True)
class SeriesDetectorConfig:
    """Everything that decides an HST detector's scores on one series."""

    name: str = "custom"
    kind: str = "hst"  # or zscore: a cheap statistical reference (rolling z over zscore_window)
    views: tuple[str, ...] = ("value",)
    scaling: str = "global_minmax"
    n_trees: int = 5
    height: int = 2
    window_size: int = 250
    seed: int = 1
    order: str = "learn_then_score"
    smoothing: int = 1  # trailing mean over this many scores (1 = none)
    zscore_window: int = 1000
    baseline_span: int = 100  # EWMA span for the baseline_dev views
    scale_span: int = 1000  # EWMA span of the mean and deviation ewm_zscore scales by
    z_clip: float = 6.0  # ewm_zscore maps [-z_clip, z_clip] deviations onto [0, 1]
    engine: str = "auto"

    def __post_init__(self) -> None:
        for name in self.views:
            if name not in VIEWS:
                raise ValueError(f"unknown view {name!r}; choose from {', '.join(VIEWS)}")
        if not self.views:
            raise ValueError("a detector needs at least one view")
        choices = {
            "kind": KINDS,
            "scaling": SCALINGS,
            "order": ORDERS,
            "engine": ENGINES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}")
        for key in (
            "n_trees",
            "height",
            "window_size",
            "smoothing",
            "baseline_span",
            "zscore_window",
            "scale_span",
        ):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be >= 1")

    @classmethod
    def from_mapping(cls, raw: dict) -> SeriesDetectorConfig:
        """Build from a dict, rejecting unknown keys (a typo must not silently do nothing)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(
                f"unknown detector setting(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        values = dict(raw)
        if "views" in values:
            values["views"] = tuple(values["views"])
        return cls(**values)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "views": list(self.views)}


@dataclass(frozen=True)
class SeriesDetector:
    """Views -> scaling -> Half-Space Trees (or a rolling z-score) -> optional smoothing.

    Every call starts from a fresh state: NAB runs each series on its own.
    """

    config: SeriesDetectorConfig

    @property
    def name(self) -> str:
        return self.config.name

    def score(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Scores per row; the series detectors count rows, not time (`timestamps` unused)."""
        c = self.config
        columns = np.column_stack([view(values, v, c.baseline_span) for v in c.views])
        if c.kind == "zscore":
            scores = squash(rolling_abs_z(columns, c.zscore_window).max(axis=1))
        else:
            scores = hst_scores(
                scale(columns, c.scaling, c.scale_span, c.z_clip),
                n_trees=c.n_trees,
                height=c.height,
                window_size=c.window_size,
                seed=c.seed,
                order=c.order,
                engine=c.engine,
            )
        if c.smoothing > 1:
            scores = pd.Series(scores).rolling(c.smoothing, min_periods=1).mean().to_numpy()
        return np.clip(scores, 0.0, 1.0)

    def detect(
        self, values: np.ndarray, timestamps: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores, and the blog's alerts: points scored above `BLOG_THRESHOLD`, one alert per
        group of them (a flag more than `BLOG_QUIET_ROWS` after the last opens a new one)."""
        scores = self.score(values)
        flagged = np.flatnonzero(scores > BLOG_THRESHOLD)
        alerts = np.zeros(len(scores), bool)
        alerts[flagged[np.r_[True, np.diff(flagged) > BLOG_QUIET_ROWS]] if len(flagged) else []] = (
            True
        )
        return scores, alerts


@dataclass(frozen=True)
class NullDetector:
    """Never detects anything: NAB's null baseline, 0 after normalisation."""

    name: str = "null"

    @property
    def config(self) -> dict:
        return {"name": self.name}

    def score(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        return np.zeros(len(values))

    def detect(
        self, values: np.ndarray, timestamps: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.score(values), np.zeros(len(values), bool)


def hst_scores(
    unit: np.ndarray,
    *,
    n_trees: int,
    height: int,
    window_size: int,
    seed: int,
    order: str,
    engine: str = "auto",
) -> np.ndarray:
    """Half-Space Trees scores for rows already scaled into [0, 1]."""
    if engine == "numpy" or (engine == "auto" and _numpy_hst() is not None):
        hst_class = _numpy_hst()
        if hst_class is None:
            raise ValueError("engine 'numpy' needs fleetwatch.hst, which is not available")
        model = hst_class(
            n_trees=n_trees,
            height=height,
            window_size=window_size,
            seed=seed,
            features=_feature_names(unit.shape[1]),
        )
        return np.asarray(model.score_learn_many(unit, order=order), dtype=float)
    return _river_scores(unit, n_trees, height, window_size, seed, order)


def _numpy_hst() -> type | None:
    try:
        from fleetwatch.hst import HalfSpaceTrees
    except ImportError:
        return None
    return HalfSpaceTrees


def _feature_names(count: int) -> list[str]:
    """Column names for HST; both engines grow trees over the same sorted names."""
    return [f"x{j:02d}" for j in range(count)]


def _river_scores(
    unit: np.ndarray, n_trees: int, height: int, window_size: int, seed: int, order: str
) -> np.ndarray:
    from river.anomaly import HalfSpaceTrees

    model = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
    names = _feature_names(unit.shape[1])
    scores = np.empty(len(unit))
    learn_first = order == "learn_then_score"
    for i, row in enumerate(unit.tolist()):
        x = dict(zip(names, row, strict=True))
        if learn_first:
            model.learn_one(x)
            scores[i] = model.score_one(x)
        else:
            scores[i] = model.score_one(x)
            model.learn_one(x)
    return scores


UPSTREAM = SeriesDetectorConfig(
    name="upstream",
    views=("value",),
    scaling="global_minmax",
    n_trees=5,
    height=2,
    window_size=250,
    seed=1,
    order="learn_then_score",
    engine="auto",  # fleetwatch.hst when present: the same scores as River, faster
)

NAMED: dict[str, Callable[[], object]] = {
    "upstream": lambda: SeriesDetector(UPSTREAM),
    "default": lambda: ProductSeriesDetector("default"),
    "previous": lambda: ProductSeriesDetector("previous", _previous()),
    "null": NullDetector,
}


def _previous() -> dict:
    """The product's defaults of state format 3, by name (`fleetwatch.detector.NAMED_CONFIGS`)."""
    from fleetwatch.detector import NAMED_CONFIGS

    return dict(NAMED_CONFIGS["previous"])


def with_seed(detector, seed: int, name: str | None = None):
    """The same detector grown from another seed, named `name` (default `<name>@seed<seed>`).

    HST scores move with the seed (on the NAB subset, one configuration spans 24-49 over four
    seeds), so a configuration is only better than another if it wins on the seed average.
    """
    if isinstance(detector, ProductSeriesDetector):
        overrides = {**detector.overrides, "seed": seed}
        return dataclasses.replace(
            detector, name=name or f"{detector.name}@seed{seed}", overrides=overrides
        )
    if not has_seed(detector):
        raise ValueError(f"{detector.name} has no seed to vary")
    config = detector.config
    return SeriesDetector(
        dataclasses.replace(config, seed=seed, name=name or f"{config.name}@seed{seed}")
    )


def seeded(detector, seeds) -> list:
    """The detector once per seed, `<name>@seed<n>`; with one seed, once under its own name
    (the seed is in its configuration); a detector without a seed once, as it is."""
    if not seeds or not has_seed(detector):
        return [detector]
    if len(seeds) == 1:
        return [with_seed(detector, seeds[0], detector.name)]
    return [with_seed(detector, seed) for seed in seeds]


def has_seed(detector) -> bool:
    return isinstance(detector, ProductSeriesDetector) or (
        isinstance(detector, SeriesDetector) and detector.config.kind == "hst"
    )


def resolve(spec: str):
    """A detector from a registered name, a JSON file path, or inline JSON.

    JSON with a `"product"` object runs the product's detector with those settings changed;
    any other JSON object is a `SeriesDetectorConfig` for the experimental series detector.
    """
    if spec in NAMED:
        return NAMED[spec]()
    raw, default_name = load_spec(spec)
    name = raw.pop("name", default_name)
    if "product" in raw:
        product = raw.pop("product")
        clock = raw.pop("clock", "data")
        if raw:
            raise ValueError(
                f"a product detector takes only name, product and clock, not {sorted(raw)}"
            )
        if not isinstance(product, dict):
            raise ValueError('"product" must be an object of DetectorConfig settings')
        return ProductSeriesDetector(name, product, clock=clock)
    return SeriesDetector(SeriesDetectorConfig.from_mapping({**raw, "name": name}))


def load_spec(spec: str) -> tuple[dict, str]:
    """A JSON object from inline text or a `.json` file, and the name to use by default."""
    text, default_name = spec.strip(), "custom"
    if not text.startswith("{"):
        path = Path(spec)
        if path.suffix != ".json" and not path.is_file():
            raise ValueError(
                f"unknown detector {spec!r}: use one of {', '.join(NAMED)}, a JSON file or inline JSON"
            )
        if not path.is_file():
            raise ValueError(f"detector configuration {path} does not exist")
        text, default_name = path.read_text(encoding="utf-8"), path.stem
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"detector configuration is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError("detector configuration must be a JSON object")
    return raw, default_name
