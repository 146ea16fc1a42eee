"""The product's detector (`fleetwatch.detector.FleetDetector`) as the evaluations run it.

Both evaluations must judge what the pipeline runs, so they build the pipeline's own objects
from its own `DetectorConfig`, changing only what the setting forces:

- NAB series have one value column, so the NAB run uses the product configuration with
  `features=("value",)` (its views scale themselves online) and scores the detector's
  continuous `score` column (before threshold and persistence; NAB sweeps its own threshold). NAB rows are fed in file order as consecutive
  1 Hz readings: the product's time rules are written for 1 Hz telemetry, and NAB's own
  timestamps repeat or step back in places, which the pipeline would drop as stale.
- Its alerts are the rows where the pipeline's episode tracker emits an "opened" event (an
  episode's first point, or the end of the cooldown that held it back): what it posts to Slack.
- Overrides come as JSON (`{"product": {"n_trees": 50, ...}}`), so a candidate default is one
  command away on both evaluations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

NAB_OVERRIDES = {"features": ("value",)}
NAB_START = pd.Timestamp("2000-01-01", tz="UTC")


def product_config(overrides: Mapping | None = None, base: Mapping | None = None):
    """The product's default `DetectorConfig` with `base`, then `overrides`, applied."""
    from fleetwatch.detector import DetectorConfig

    changes = {**(base or {}), **(overrides or {})}
    known = {f.name for f in dataclasses.fields(DetectorConfig)}
    unknown = set(changes) - known
    if unknown:
        raise ValueError(f"unknown product setting(s) {sorted(unknown)}; known: {sorted(known)}")
    try:
        return dataclasses.replace(DetectorConfig(), **changes)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid product setting: {exc}") from exc


def engine_for(name: str):
    """The engine a name asks for: "numpy" (the product's), "river" (River itself; imported
    only then, as River is slow to import)."""
    if name != "river":
        return name
    from detection_eval.river_engine import RiverEngine

    return RiverEngine


@dataclasses.dataclass(frozen=True)
class ProductSeriesDetector:
    """`FleetDetector` on one series, fresh per series: its continuous score per row."""

    name: str
    overrides: Mapping = dataclasses.field(default_factory=dict)
    engine: str = "numpy"

    def __post_init__(self) -> None:
        product_config(self.overrides, NAB_OVERRIDES)  # a bad setting fails before any run

    @property
    def config(self) -> dict:
        return {
            "product": product_config(self.overrides, NAB_OVERRIDES).to_json(),
            "engine": self.engine,
        }

    def score(self, values: np.ndarray) -> np.ndarray:
        return self.detect(values)[0]

    def detect(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The continuous score per row, and the rows the pipeline would post an alert at:
        its episode tracker's "opened" events (threshold, persistence, cooldown)."""
        from fleetwatch.detector import FleetDetector
        from fleetwatch.episodes import EpisodeTracker

        config = product_config(self.overrides, NAB_OVERRIDES)
        detector = FleetDetector(config, engine=engine_for(self.engine))
        frame = pd.DataFrame(
            {
                "unique_id": "series",
                "time": NAB_START + pd.to_timedelta(np.arange(len(values)), unit="s"),
                "value": np.asarray(values, dtype=float),
            }
        )
        scored = detector.score_frame(frame)
        score = np.clip(np.nan_to_num(scored["score"].to_numpy(dtype=float), nan=0.0), 0.0, 1.0)
        events = EpisodeTracker(config.features, config.rule).update(scored)
        alerts = np.zeros(len(values), bool)
        opened = [e.time - NAB_START.value for e in events if e.kind == "opened"]
        alerts[np.asarray(opened, dtype=np.int64) // 1_000_000_000] = True
        return score, alerts
