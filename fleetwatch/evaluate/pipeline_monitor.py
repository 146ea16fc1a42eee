"""What the simulator evaluation needs from a pipeline: readings in, episodes out.

The evaluation must judge the detection and episode logic a pipeline really runs, so it talks to
it through one small protocol (`Monitor`):

    monitor.process(batch) -> list[Episode]   # batch: one scheduled run's new rows
    monitor.finish() -> list[Episode]         # anything the pipeline reports at the end

`batch` is a DataFrame with `machine_id, time` (epoch seconds) and the sensor columns
`temperature, load, power, vibration`, in time order, as one scheduled pipeline run reads it;
the returned episodes are the ones that opened during the batch (`Episode.opened_at` is the
reading at which the pipeline would alert).

- `UpstreamMonitor` is the blog's pipeline: every run refits a fresh River HST (5 trees,
  height 2, window 250, seed 1) per machine on the machine's whole power history, min-max
  scaled over that history, learn then score, and flags the run's new rows scoring > 0.8. The
  blog had no episodes (it failed the run); here flagged readings group into episodes closed
  after 60 quiet seconds, which is kinder to it than its repeated failure messages.
- `StandInMonitor` streams the same HST over all four sensors (running min-max) until the
  pipeline's own detector is wired in as `default`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from fleetwatch.evaluate.detectors import hst_scores
from fleetwatch.evaluate.episode_matching import Episode

SENSORS: tuple[str, ...] = ("temperature", "load", "power", "vibration")
UPSTREAM_THRESHOLD = 0.8
QUIET_SECONDS = 60.0


class Monitor(Protocol):
    name: str

    def process(self, batch: pd.DataFrame) -> list[Episode]: ...

    def finish(self) -> list[Episode]: ...


@dataclass
class EpisodeGrouper:
    """Flagged readings -> episodes: one opens at a flag, closes after `quiet` unflagged seconds."""

    quiet: float = QUIET_SECONDS
    _last_flag: dict[str, float] = field(default_factory=dict)

    def feed(self, machine_id: str, times: np.ndarray, flags: np.ndarray) -> list[Episode]:
        opened = []
        last = self._last_flag.get(machine_id)
        for t in times[np.asarray(flags, dtype=bool)].tolist():
            if last is None or t - last > self.quiet:
                opened.append(Episode(machine_id, t, t))
            last = t
        if last is not None:
            self._last_flag[machine_id] = last
        return opened


class UpstreamMonitor:
    """The blog's pipeline, one run per batch (see the module docstring)."""

    name = "upstream (blog HST on power, refit every run)"

    def __init__(self) -> None:
        self._history: dict[str, list[np.ndarray]] = {}
        self._episodes = EpisodeGrouper()

    def process(self, batch: pd.DataFrame) -> list[Episode]:
        opened: list[Episode] = []
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

    def finish(self) -> list[Episode]:
        return []


@dataclass
class _Scaler:
    low: np.ndarray
    high: np.ndarray


class StandInMonitor:
    """Upstream-style HST on all four sensors, one River model per machine, streaming."""

    name = "stand-in (upstream HST on 4 sensors)"

    def __init__(self) -> None:
        self._models: dict[str, object] = {}
        self._scalers: dict[str, _Scaler] = {}
        self._episodes = EpisodeGrouper()

    def process(self, batch: pd.DataFrame) -> list[Episode]:
        from river.anomaly import HalfSpaceTrees

        opened: list[Episode] = []
        for machine_id, rows in batch.groupby("machine_id", sort=True):
            key = str(machine_id)
            model = self._models.setdefault(
                key, HalfSpaceTrees(n_trees=5, height=2, window_size=250, seed=1)
            )
            values = rows[list(SENSORS)].to_numpy(dtype=float)
            scaler = self._scalers.setdefault(key, _Scaler(values[0], values[0]))
            flags = np.zeros(len(values), dtype=bool)
            for i, x in enumerate(values):
                # Running (causal) min-max: the upstream scaling without looking ahead.
                scaler.low, scaler.high = np.minimum(scaler.low, x), np.maximum(scaler.high, x)
                span = scaler.high - scaler.low
                unit = np.where(span > 0, (x - scaler.low) / np.where(span > 0, span, 1.0), 0.5)
                features = dict(zip(SENSORS, unit.tolist(), strict=True))
                model.learn_one(features)
                flags[i] = model.score_one(features) > UPSTREAM_THRESHOLD
            opened.extend(self._episodes.feed(key, rows["time"].to_numpy(dtype=float), flags))
        return opened

    def finish(self) -> list[Episode]:
        return []


def make_monitor(detector: str = "default") -> Monitor:
    """The monitor for a detector name: `upstream`, or `default` (the stand-in for now)."""
    if detector == "upstream":
        return UpstreamMonitor()
    if detector == "default":
        return StandInMonitor()
    raise ValueError(
        f"unknown detector {detector!r} for the simulator evaluation: upstream, default"
    )
