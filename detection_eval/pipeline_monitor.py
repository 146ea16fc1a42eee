"""What the simulator evaluation needs from a pipeline: readings in, episodes out.

The evaluation must judge the detection and episode logic a pipeline really runs, so it talks to
it through one small protocol (`Monitor`):

    monitor.process(batch) -> list[AlertedSpan]   # batch: one scheduled run's new rows
    monitor.finish() -> list[AlertedSpan]         # anything the pipeline reports at the end

`batch` is a DataFrame with `machine_id, time` (epoch seconds) and the sensor columns
`temperature, load, power, vibration`, in time order, as one scheduled pipeline run reads it;
the returned episodes are the ones that opened during the batch (`AlertedSpan.opened_at` is the
reading at which the pipeline would alert).

- `UpstreamMonitor` is the blog's pipeline: every run refits a fresh River HST (5 trees,
  height 2, window 250, seed 1) per machine on the machine's whole power history, min-max
  scaled over that history, learn then score, and flags the run's new rows scoring > 0.8. The
  blog had no episodes (it failed the run); here flagged readings group into episodes closed
  after 60 quiet seconds, which is kinder to it than its repeated failure messages.
- `ProductMonitor` is the pipeline's own detector and episode tracker (`default`, or the
  product configuration with JSON overrides).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from detection_eval.detectors import hst_scores, load_spec
from detection_eval.episode_matching import AlertedSpan
from detection_eval.product_detector import product_config

SENSORS: tuple[str, ...] = ("temperature", "load", "power", "vibration")
UPSTREAM_THRESHOLD = 0.8
QUIET_SECONDS = 60.0


class Monitor(Protocol):
    detector: str  # the name it was asked for by
    name: str  # what runs under that name

    def process(self, batch: pd.DataFrame) -> list[AlertedSpan]: ...

    def finish(self) -> list[AlertedSpan]: ...


@dataclass
class EpisodeGrouper:
    """Flagged readings -> episodes: one opens at a flag, closes after `quiet` unflagged seconds."""

    quiet: float = QUIET_SECONDS
    _last_flag: dict[str, float] = field(default_factory=dict)

    def feed(self, machine_id: str, times: np.ndarray, flags: np.ndarray) -> list[AlertedSpan]:
        opened = []
        last = self._last_flag.get(machine_id)
        for t in times[np.asarray(flags, dtype=bool)].tolist():
            if last is None or t - last > self.quiet:
                opened.append(AlertedSpan(machine_id, t, t))
            last = t
        if last is not None:
            self._last_flag[machine_id] = last
        return opened


class UpstreamMonitor:
    """The blog's pipeline, one run per batch (see the module docstring)."""

    detector = "upstream"
    name = "blog HST on power, refit every run"

    def __init__(self) -> None:
        self._history: dict[str, list[np.ndarray]] = {}
        self._episodes = EpisodeGrouper()

    def process(self, batch: pd.DataFrame) -> list[AlertedSpan]:
        opened: list[AlertedSpan] = []
        for machine_id, rows in batch.groupby("machine_id", sort=True):
            key = str(machine_id)
            parts = self._history.setdefault(key, [])
            parts.append(rows[["time", "power"]].to_numpy(dtype=float))
            history = np.concatenate(parts)
            self._history[key] = [history]
            power = history[:, 1]
            span = power.max() - power.min()
            unit = (power - power.min()) / span if span > 0 else np.zeros_like(power)
            scores = hst_scores(
                unit[:, None],
                n_trees=5,
                height=2,
                window_size=250,
                seed=1,
                order="learn_then_score",
            )
            new = slice(len(history) - len(rows), None)
            flags = scores[new] > UPSTREAM_THRESHOLD
            opened.extend(self._episodes.feed(key, history[new, 0], flags))
        return opened

    def finish(self) -> list[AlertedSpan]:
        return []


class ProductMonitor:
    """The pipeline's own detection: `fleetwatch.state.FleetState.process` on every batch.

    That is the detector (`FleetDetector`: scores, threshold, persistence, no learning inside
    an episode) and the episode tracker (one "opened" event per alert, cooldown); an episode
    counts from its "opened" event, so episodes the cooldown suppresses never count.
    """

    def __init__(self, name: str, overrides: Mapping | None = None, cooldown: float | None = None):
        from fleetwatch.state import FleetState

        self.detector = name
        self.state = FleetState.new(product_config(overrides), cooldown_seconds=cooldown)
        self.name = "fleetwatch FleetDetector + EpisodeTracker"

    def process(self, batch: pd.DataFrame) -> list[AlertedSpan]:
        frame = batch.rename(columns={"machine_id": "unique_id"})
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
        _, events = self.state.process(frame)
        return [
            AlertedSpan(e.episode.machine, e.episode.start / 1e9, e.time / 1e9)
            for e in events
            if e.kind == "opened"
        ]

    def finish(self) -> list[AlertedSpan]:
        return []


def make_monitor(spec: str = "default") -> Monitor:
    """`upstream`, `default`, or JSON `{"product": {...}, "cooldown_seconds": ...}` (or a file)."""
    if spec == "upstream":
        return UpstreamMonitor()
    if spec == "default":
        return ProductMonitor("default")
    if spec == "previous":
        from fleetwatch.detector import NAMED_CONFIGS

        return ProductMonitor("previous", dict(NAMED_CONFIGS["previous"]))
    raw, default_name = load_spec(spec)
    name = raw.pop("name", default_name)
    product = raw.pop("product", None)
    cooldown = raw.pop("cooldown_seconds", None)
    if not isinstance(product, dict) or raw:
        raise ValueError(
            'the simulator runs the product detector: give {"product": {...}} '
            '(and optionally "name", "cooldown_seconds")'
        )
    return ProductMonitor(name, product, cooldown)
