"""What the simulator evaluation needs from the pipeline: readings in, episodes out.

The evaluation must judge the detector and episode logic the pipeline really runs, so it talks
to them through this one small protocol:

    monitor.process(batch) -> list[Episode]   # batch: one pipeline run's new rows
    monitor.finish() -> list[Episode]         # episodes still open at the end of the run

`batch` is a DataFrame with `machine_id, time` (epoch seconds) and the sensor columns
`temperature, load, power, vibration`, in time order, as one scheduled pipeline run would read
it; the returned episodes are the ones that opened during the batch (`Episode.opened_at` is the
reading at which the pipeline would alert).

`StandInMonitor` implements it with the upstream blog's logic on all four sensors (HST 5 trees,
height 2, window 250, causal running min-max scaling, score > 0.8, an episode per run of
anomalous readings closed after 60 quiet seconds) until the pipeline's own detector is wired in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fleetwatch.evaluate.episode_matching import Episode

SENSORS: tuple[str, ...] = ("temperature", "load", "power", "vibration")


@dataclass
class _MachineState:
    model: object
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    open_start: float | None = None
    last_anomaly: float | None = None


class StandInMonitor:
    """Upstream-style detection and episodes, one River model per machine, streaming."""

    name = "stand-in (upstream HST on 4 sensors)"

    def __init__(self, threshold: float = 0.8, quiet_seconds: float = 60.0) -> None:
        self.threshold = threshold
        self.quiet_seconds = quiet_seconds
        self._machines: dict[str, _MachineState] = {}

    def process(self, batch: pd.DataFrame) -> list[Episode]:
        from river.anomaly import HalfSpaceTrees

        opened: list[Episode] = []
        for machine_id, rows in batch.groupby("machine_id", sort=True):
            key = str(machine_id)
            if key not in self._machines:
                model = HalfSpaceTrees(n_trees=5, height=2, window_size=250, seed=1)
                self._machines[key] = _MachineState(model=model)
            state = self._machines[key]
            for t, *values in rows[["time", *SENSORS]].itertuples(index=False):
                x = np.asarray(values, dtype=float)
                # Running (causal) min-max: the upstream scaling without looking ahead.
                state.low = x if state.low is None else np.minimum(state.low, x)
                state.high = x if state.high is None else np.maximum(state.high, x)
                span = state.high - state.low
                unit = np.where(span > 0, (x - state.low) / np.where(span > 0, span, 1.0), 0.5)
                features = dict(zip(SENSORS, unit.tolist(), strict=True))
                state.model.learn_one(features)
                anomalous = state.model.score_one(features) > self.threshold
                opened.extend(self._step(key, state, float(t), anomalous))
        return opened

    def _step(
        self, machine_id: str, state: _MachineState, t: float, anomalous: bool
    ) -> list[Episode]:
        quiet = state.last_anomaly is not None and t - state.last_anomaly > self.quiet_seconds
        if state.open_start is not None and quiet:
            state.open_start = None
        if not anomalous:
            return []
        state.last_anomaly = t
        if state.open_start is None:
            state.open_start = t
            return [Episode(machine_id, t, t)]
        return []

    def finish(self) -> list[Episode]:
        return []


def make_monitor(detector: str = "default") -> StandInMonitor:
    """The monitor for a detector name (only the stand-in until the pipeline's detector lands)."""
    if detector not in ("default", "upstream", "stand-in"):
        raise ValueError(f"unknown detector {detector!r} for the simulator evaluation")
    return StandInMonitor()
