"""A DataFrame written with influxdb3-python comes back equal, with Core's Arrow types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

TAGS = ["machineID", "provider"]


def _frame(rows: int = 600, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "time": pd.date_range(start, periods=rows, freq="s"),
            "machineID": [f"machine{i % 3 + 1}" for i in range(rows)],
            "provider": ["acme" if i % 2 else "globex" for i in range(rows)],
            "temperature": rng.normal(70, 5, rows),
            "rpm": rng.integers(1000, 2000, rows),
            "running": [bool(i % 5) for i in range(rows)],
            "status": ["ok" if i % 7 else "warn" for i in range(rows)],
        }
    )


def test_dataframe_round_trip_pandas_and_arrow(localflux_server):
    client = localflux_server.client()
    frame = _frame()
    client.write(
        frame,
        data_frame_measurement_name="machine_data",
        data_frame_tag_columns=TAGS,
        data_frame_timestamp_column="time",
    )
    table = client.query('SELECT * FROM machine_data ORDER BY time, "machineID"')
    assert table.schema.names == sorted(frame.columns)
    assert table.schema.field("time").type == pa.timestamp("ns")
    assert not table.schema.field("time").nullable
    assert table.schema.field("machineID").type == pa.dictionary(pa.int32(), pa.string())
    assert table.schema.field("temperature").type == pa.float64()
    assert table.schema.field("rpm").type == pa.int64()
    assert table.schema.field("running").type == pa.bool_()
    assert table.schema.field("status").type == pa.string()
    back = client.query("SELECT * FROM machine_data ORDER BY time", mode="pandas")
    pd.testing.assert_frame_equal(
        back[sorted(frame.columns)].astype({c: str for c in TAGS}),
        frame[sorted(frame.columns)],
        check_dtype=False,
    )
