"""Shared inputs for the pipeline-library tests: alert events and scored telemetry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from fleetwatch.episodes import Episode, EpisodeEvent
from influx_magic.alerts import Alert
from influx_magic.influx import FEATURES

START = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def event(
    machine: str = "machine2",
    kind: str = "opened",
    *,
    start: datetime | pd.Timestamp = START,
    provider: str | None = None,
    bursts: int = 1,
    follow_ups: int = 0,
    delayed_by: timedelta | None = None,
) -> Alert:
    """An alert about `machine` (unique_id `acme-inc-<machine>`): load and vibration moved; a
    resolved one lasted 7 minutes; `delayed_by`: held back by a cooldown that long."""
    begin = pd.Timestamp(start).value
    end = begin + (7 * 60 * 10**9 if kind == "resolved" else 0)
    due = end + (0 if delayed_by is None else pd.Timedelta(delayed_by).value)
    episode = Episode(
        machine=f"acme-inc-{machine}",
        episode_id=f"{machine}-20240501T100000",
        start=begin,
        end=end,
        peak_score=0.934,
        peak_time=begin,
        peak_values={"temperature": 97.0, "load": 200.0, "power": 455.5, "vibration": 560.0},
        deviations={"temperature": 0.5, "load": 4.2, "power": 1.0, "vibration": 3.1},
        top_features=["load", "vibration"],
        bursts=bursts,
        announced=True,
        follow_ups=follow_ups,
        resolved_at=end if kind == "resolved" else None,
    )
    event = EpisodeEvent(kind, due, episode, delayed=delayed_by is not None)
    return Alert(event, machine, provider, threshold=0.8)


def scores(machine: str, *, anomalous: slice | None = None, points: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "time": pd.date_range("2024-05-01 10:00", periods=points, freq="1s", tz="UTC"),
            "machineID": machine,
            "unique_id": f"acme-inc-{machine}",
            "provider": "Acme Inc",
            **{f: rng.uniform(50, 60, points) for f in FEATURES},
            "score": rng.uniform(0.3, 0.6, points),
            "is_anomaly": False,
        }
    )
    if anomalous is not None:
        frame.loc[frame.index[anomalous], ["load", "score", "is_anomaly"]] = [200.0, 0.95, True]
    return frame
