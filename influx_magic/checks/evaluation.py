"""What every check's evaluation shares: the client, the moment, the telemetry table, errors.

A check is evaluated at `now` (wall-clock UTC) against InfluxDB with parameterised SQL: values
(times, thresholds, tag values) are bound by the client as `$name` parameters, never pasted;
the only names written into SQL are identifiers (the sensor, the table), quoted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
from influxdb_client_3 import InfluxDBClient3

from influx_magic.influx import MACHINE_TABLE, query_table, time_param

# Telegraf flushes every ~10 s with jitter, so a reading can land up to ~15 s after its time:
# a check that reads on from where it stopped re-reads this much (as the pipeline's loader).
LATENESS = timedelta(seconds=30)
# After an outage, a check that reads on from where it stopped reads at most this far back.
MAX_CATCH_UP = timedelta(hours=1)


class CheckFailed(RuntimeError):
    """A check could not be judged this run (its query failed or returned something unusable);
    the message says why. The check's state stays as it was; the other checks go on."""


@dataclass(frozen=True)
class Evaluation:
    """One run's evaluation of the checks: where and when."""

    client: InfluxDBClient3
    now: pd.Timestamp
    table: str = MACHINE_TABLE
    # machineID -> provider of machines the pipeline knows, for SQL rows without a provider
    providers: Mapping[str, str] = field(default_factory=dict)
    # a finding quiet for this long resolves; one that holds again sooner is another burst
    recur_gap: pd.Timedelta = pd.Timedelta(0)
    # at most one "recurring" follow-up per episode in this time
    follow_up: pd.Timedelta = pd.Timedelta(hours=1)

    @property
    def now_ns(self) -> int:
        return int(self.now.value)

    @property
    def recur_gap_ns(self) -> int:
        return int(pd.Timedelta(self.recur_gap).value)

    @property
    def follow_up_ns(self) -> int:
        return int(pd.Timedelta(self.follow_up).value)

    def query(self, sql: str, params: Mapping[str, Any], what: str) -> pa.Table:
        """Run `sql` with `params` bound (times given as `pd.Timestamp` become RFC 3339)."""
        bound = {
            name: time_param(value) if isinstance(value, pd.Timestamp) else value
            for name, value in params.items()
        }
        return query_table(self.client, sql, bound, what=what)


def column(table: pa.Table, name: str, kind: pa.DataType) -> pd.Series:
    """One column of a query result as a pandas Series of the given Arrow type."""
    return table.column(name).cast(kind).to_pandas()


def utc_ns(table: pa.Table, name: str) -> pd.Series:
    """A time column as int64 nanoseconds (InfluxDB's times carry no zone: they are UTC)."""
    return table.column(name).cast(pa.timestamp("ns")).cast(pa.int64()).to_pandas()
