"""The product's detector (`fleetwatch.detector.FleetDetector`) as the evaluations run it.

Both evaluations must judge what the pipeline runs, so they build the pipeline's own objects
from its own `DetectorConfig`, changing only what the setting forces:

- NAB series have one value column, so the NAB run uses the product configuration with
  `features=("value",)` (its views scale themselves online) and scores the detector's
  continuous `score` column (before threshold and persistence; NAB sweeps its own threshold).
- Rows are fed with the corpus' own timestamps (`clock="data"`, NAB's are mostly 5-minute
  steps), so everything that counts seconds (quiet and cooldown seconds, an episode accepted
  as the new normal after `accept_after_seconds`, anything periodic) sees real time. NAB's
  timestamps repeat or step back in a few places, which the pipeline would drop as stale; such
  a row is fed 1 s after the previous one (`strictly_increasing`), so every row is scored.
  `clock="rows"` feeds consecutive 1 Hz readings instead (how the first evaluations ran).
- Its alerts are the rows where the pipeline's episode tracker emits an "opened" event (an
  episode's first point, or the end of the cooldown that held it back): what it posts to Slack.
- Overrides come as JSON (`{"product": {"n_trees": 50, ...}}`), so a candidate default is one
  command away on every evaluation.

>>> stamps = np.array([0, 300, 300, 100, 900], dtype="datetime64[s]").astype("datetime64[ns]")
>>> (strictly_increasing(stamps) - stamps[0]).astype("timedelta64[s]").astype(int).tolist()
[0, 300, 301, 302, 900]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

NAB_OVERRIDES = {"features": ("value",)}
NAB_START = pd.Timestamp("2000-01-01", tz="UTC")
CLOCKS = ("data", "rows")
SECOND_NS = 1_000_000_000


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


def strictly_increasing(stamps: np.ndarray) -> np.ndarray:
    """Timestamps (datetime64[ns]) with every repeated or earlier one moved to 1 s after the
    row before: `t'_i = max(t_i, t'_(i-1) + 1 s)`, i.e. `i s + cummax(t_j - j s)`."""
    ns = np.asarray(stamps, dtype="datetime64[ns]").astype(np.int64)
    steps = np.arange(len(ns), dtype=np.int64) * SECOND_NS
    return (np.maximum.accumulate(ns - steps) + steps).astype("datetime64[ns]")


def feed_times(timestamps: np.ndarray | None, n_rows: int, clock: str) -> pd.DatetimeIndex:
    """The times the detector sees for a series' rows (UTC)."""
    if clock == "rows" or timestamps is None:
        return NAB_START + pd.to_timedelta(np.arange(n_rows), unit="s")
    if len(timestamps) != n_rows:
        raise ValueError(f"{len(timestamps)} timestamps for {n_rows} rows")
    return pd.DatetimeIndex(strictly_increasing(timestamps)).tz_localize("UTC")


def opened_rows(events, times: pd.DatetimeIndex) -> np.ndarray:
    """Row mask of the "opened" events: each event's data time is one of the fed times."""
    alerts = np.zeros(len(times), bool)
    opened = np.asarray([e.time for e in events if e.kind == "opened"], dtype=np.int64)
    if len(opened):
        alerts[np.searchsorted(times.asi8, opened)] = True
    return alerts


@dataclasses.dataclass(frozen=True)
class ProductSeriesDetector:
    """`FleetDetector` on one series, fresh per series: its continuous score per row."""

    name: str
    overrides: Mapping = dataclasses.field(default_factory=dict)
    engine: str = "numpy"
    clock: str = "data"

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        product_config(self.overrides, NAB_OVERRIDES)  # a bad setting fails before any run

    @property
    def config(self) -> dict:
        return {
            "product": product_config(self.overrides, NAB_OVERRIDES).to_json(),
            "engine": self.engine,
            "clock": self.clock,
        }

    def score(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        return self.detect(values, timestamps)[0]

    def detect(
        self, values: np.ndarray, timestamps: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The continuous score per row, and the rows the pipeline would post an alert at:
        its episode tracker's "opened" events (threshold, persistence, cooldown)."""
        from fleetwatch.detector import FleetDetector
        from fleetwatch.episodes import EpisodeTracker

        config = product_config(self.overrides, NAB_OVERRIDES)
        detector = FleetDetector(config, engine=engine_for(self.engine))
        times = feed_times(timestamps, len(values), self.clock)
        frame = pd.DataFrame(
            {"unique_id": "series", "time": times, "value": np.asarray(values, dtype=float)}
        )
        scored = detector.score_frame(frame)
        score = np.clip(np.nan_to_num(scored["score"].to_numpy(dtype=float), nan=0.0), 0.0, 1.0)
        events = EpisodeTracker(config.features, config.rule).update(scored)
        return score, opened_rows(events, times)
