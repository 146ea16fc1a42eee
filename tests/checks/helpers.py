"""What the checks' tests (tests/checks) and the pipeline's (tests/influx_magic) both declare
and write: telemetry as Telegraf writes it, and the SQL checks that must bind a hostile
parameter and survive a broken query."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from influx_magic.influx import write_frame

PROVIDER = "Tanaka Seiki"
HOSTILE = "O'Brien, Sons & Co'; DROP TABLE machine_data; --"

# Checks-file entries (append to "checks:\n"): rows hotter than 90 from the hostile provider,
# whose name must stay a bound value; and a query on a table that does not exist.
HOT_ROWS_CHECK = f"""\
  - name: hot-rows
    kind: sql
    window: 1m
    query: |
      SELECT "machineID", provider, time, temperature AS value
      FROM machine_data
      WHERE time >= $since AND time < $until
        AND provider = $provider AND temperature > $limit
    params:
      provider: {json.dumps(HOSTILE)}
      limit: 90
"""
BROKEN_CHECK = """\
  - name: broken
    kind: sql
    query: SELECT "machineID", time, value FROM no_such_table WHERE time >= $since
"""


def write_readings(
    client: Any,
    machine: str,
    start: pd.Timestamp,
    values: dict[str, Iterable[float]],
    provider: str = PROVIDER,
) -> None:
    """One reading per second per value, starting at `start`, as Telegraf writes them."""
    columns = {name: np.asarray(list(v), dtype=float) for name, v in values.items()}
    count = len(next(iter(columns.values())))
    frame = pd.DataFrame(
        {
            "time": pd.date_range(start, periods=count, freq="1s"),
            "machineID": machine,
            "provider": provider,
            **columns,
        }
    )
    write_frame(
        client, frame, table="machine_data", tags=["machineID", "provider"], fields=list(columns)
    )
