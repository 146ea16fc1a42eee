"""Operator actions to InfluxDB table `anomaly_feedback`, beside the scores and episodes.

One row per action: time = when it was given; tags `machineID`, `provider`, `action` (mute,
unmute, ack, false_alarm); fields `unique_id`, `who`, `reason`, `episode_id`, `until`,
`feature`, `threshold_raise`, `action_id`. Written through the client's own serializer
(`influx_magic.influx.write_frame`), never pasted line protocol; the same action written twice
is the same row.

`flush(store, influx)` writes every action still marked unwritten and marks those written; the
command-line tool calls it right after an action, the pipeline's exporter on every run, so an
action given while InfluxDB was down lands there on the next run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pandas as pd

from influx_magic.influx import InfluxError, InfluxSettings, connect, write_frame
from influx_magic.operations.operator_store import Action, OperatorStore

FEEDBACK_TABLE = "anomaly_feedback"
TAGS = ("machineID", "provider", "action")
FIELDS = (
    "unique_id",
    "who",
    "reason",
    "episode_id",
    "until",
    "feature",
    "threshold_raise",
    "action_id",
)


def feedback_frame(actions: Sequence[Action]) -> pd.DataFrame:
    """The rows for `actions` (see the module doc).

    >>> a = Action("a1", "2025-06-02T08:00:00+00:00", "ana", "mute", "acme-m1", "m1", "ACME",
    ...            reason="oil, change", until="2025-06-02T10:00:00+00:00")
    >>> feedback_frame([a])[["machineID", "action", "who", "reason"]].values.tolist()
    [['m1', 'mute', 'ana', 'oil, change']]
    """
    rows = [
        {
            "time": pd.Timestamp(a.at),
            "machineID": a.machine_id,
            "provider": a.provider,
            "action": a.action,
            "unique_id": a.unique_id,
            "who": a.who,
            "reason": a.reason or None,
            "episode_id": a.episode_id,
            "until": a.until,
            "feature": a.feature,
            "threshold_raise": None if a.threshold_raise is None else float(a.threshold_raise),
            "action_id": a.id,
        }
        for a in actions
    ]
    return pd.DataFrame(rows, columns=["time", *TAGS, *FIELDS])


def flush(store: OperatorStore, influx: InfluxSettings, timeout: float = 30.0) -> int:
    """Write the unwritten actions; how many were written. Raises `InfluxError` when InfluxDB
    cannot take them (they stay unwritten for the next try)."""
    pending = store.read().unwritten()
    if not pending:
        return 0
    with contextlib.closing(
        connect(influx, write_timeout=timeout, query_timeout=timeout)
    ) as client:
        write_frame(client, feedback_frame(pending), table=FEEDBACK_TABLE, tags=TAGS, fields=FIELDS)
    with store.change() as state:
        state.mark_written({a.id for a in pending})
    return len(pending)


def try_flush(store: OperatorStore, influx: InfluxSettings, timeout: float = 30.0) -> str:
    """`flush`, for callers that go on either way: what happened, in words."""
    try:
        count = flush(store, influx, timeout)
    except (InfluxError, ValueError) as error:
        left = len(store.read().unwritten())
        return f"{left} action(s) kept for the next run ({error})"
    return f"{count} action(s) written to {FEEDBACK_TABLE}" if count else ""
