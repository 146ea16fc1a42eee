"""What a run writes back to InfluxDB: the scores of the points it scored, its episode events.

`anomaly_scores` gets one row per scored point (tags machineID, provider; fields score,
is_anomaly, episode_id); rows re-read because of the lateness allowance were not scored again
(`status` is not "scored") and are not written again. `anomaly_episodes` gets one row per
episode, written when it opens and again when it resolves. Writes are idempotent (same tags
and time replace the row), so a run redone after a failure writes the same rows once more,
harmlessly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from influx_magic.alerts import Alert
from influx_magic.influx import TAGS, InfluxSettings, connect, write_episodes, write_scores


@dataclass(frozen=True)
class Written:
    """Rows written by one run."""

    scores: int
    episodes: int
    anomalous_points: int


def write_results(
    influx: InfluxSettings, checked: pd.DataFrame, alerts: Sequence[Alert]
) -> Written:
    """Write the scored rows of `checked` to `anomaly_scores`, `alerts` to `anomaly_episodes`."""
    columns = ["time", *TAGS, "score", "is_anomaly", "episode_id"]
    rows = checked.loc[checked["status"].to_numpy() == "scored", columns]  # no full copy
    scores = episodes = 0
    if len(rows) or alerts:
        with contextlib.closing(connect(influx)) as client:
            if len(rows):
                scores = write_scores(client, rows)
            episodes = write_episodes(client, alerts)
    anomalous = int(rows["is_anomaly"].sum()) if len(rows) else 0
    return Written(scores, episodes, anomalous)
