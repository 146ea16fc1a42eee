"""What a run writes back to InfluxDB: the scores of the points it scored, its episodes.

`anomaly_scores` gets one row per scored point (tags machineID, provider; fields score,
is_anomaly, episode_id, unique_id, config_id, warm and each sensor's deviation dev_<feature>);
rows re-read because of the lateness allowance were not scored again (`status` is not
"scored") and are not written again. `anomaly_episodes` gets one row per episode, rewritten
whenever a run changes it (announced or held back, grown, resolved). An experiment writes to
`anomaly_scores_<config_id>` and `anomaly_episodes_<config_id>` instead.
Writes are idempotent (same tags and time replace the row), so a run redone after a failure
writes the same rows once more, harmlessly. The declared checks' findings go to
`anomaly_episodes` too, when they open and when they resolve (`write_check_findings`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from fleetwatch.episodes import Episode
from influx_magic.alerts import Alert, CheckAlert
from influx_magic.influx import (
    SCORE_FIELDS,
    TAGS,
    InfluxSettings,
    connect,
    write_episodes,
    write_findings,
    write_scores,
)
from influx_magic.run_context import Configuration


@dataclass(frozen=True)
class Written:
    """Rows written by one run."""

    scores: int
    episodes: int
    anomalous_points: int


def write_results(
    influx: InfluxSettings,
    configuration: Configuration,
    checked: pd.DataFrame,
    episodes: Sequence[Episode],
    identities: Mapping[str, Sequence[str]],
    statuses: Mapping[str, str] | None = None,
) -> Written:
    """Write the scored rows of `checked` and `episodes` to the configuration's tables
    (`identities`: each unique_id's machineID and provider; `statuses`: episode id -> a status
    an operator decision set, e.g. `muted`)."""
    present = [c for c in ["time", *TAGS, *SCORE_FIELDS] if c in checked.columns]
    columns = present + [c for c in checked.columns if c.startswith("dev_")]
    rows = checked.loc[checked["status"].to_numpy() == "scored", columns]  # no full copy
    rows["config_id"] = configuration.config_id
    scores = written = 0
    if len(rows) or episodes:
        with contextlib.closing(connect(influx)) as client:
            if len(rows):
                scores = write_scores(client, rows, table=configuration.scores_table)
            written = write_episodes(
                client, episodes, identities, table=configuration.episodes_table, statuses=statuses
            )
    anomalous = int(rows["is_anomaly"].sum()) if len(rows) else 0
    return Written(scores, written, anomalous)


def write_check_findings(influx: InfluxSettings, alerts: Sequence[Alert | CheckAlert]) -> int:
    """Write the findings the run's `CheckAlert`s announce to `anomaly_episodes` (with the
    check's name in `check_name`); the rows written."""
    findings = [alert.event.episode for alert in alerts if isinstance(alert, CheckAlert)]
    if not findings:
        return 0
    with contextlib.closing(connect(influx)) as client:
        return write_findings(client, findings)
