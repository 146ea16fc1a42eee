"""A DataFrame written with influxdb3-python comes back equal, with Core's Arrow types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from influxdb_client_3.exceptions import InfluxDB3ClientQueryError

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


def _recent_frame(rows: int = 1800) -> pd.DataFrame:
    start = pd.Timestamp.now(tz="UTC").floor("s").tz_localize(None) - pd.Timedelta(seconds=rows)
    return _frame(rows, start=str(start))


def _write(client, frame: pd.DataFrame) -> None:
    client.write(
        frame,
        data_frame_measurement_name="machine_data",
        data_frame_tag_columns=TAGS,
        data_frame_timestamp_column="time",
    )


def test_core_style_queries(localflux_server):
    client = localflux_server.client()
    frame = _recent_frame()
    _write(client, frame)

    recent = client.query(
        "SELECT count(*) AS n FROM machine_data WHERE time >= now() - interval '10 minutes'"
    )
    cutoff = pd.Timestamp.now(tz="UTC").tz_localize(None) - pd.Timedelta(minutes=10)
    expected = int((frame["time"] >= cutoff).sum())
    assert abs(recent.column("n")[0].as_py() - expected) <= 2  # now() moved on a little

    binned = client.query(
        "SELECT date_bin(interval '5 minutes', time) AS bucket, \"machineID\", "
        "avg(temperature) AS temperature, count(*) AS n FROM machine_data "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        mode="pandas",
    )
    grouped = (
        frame.assign(bucket=frame["time"].dt.floor("5min"))
        .groupby(["bucket", "machineID"], as_index=False)
        .agg(temperature=("temperature", "mean"), n=("temperature", "size"))
    )
    assert binned["bucket"].tolist() == grouped["bucket"].tolist()
    assert binned["machineID"].astype(str).tolist() == grouped["machineID"].tolist()
    np.testing.assert_allclose(binned["temperature"], grouped["temperature"])
    assert binned["n"].tolist() == grouped["n"].tolist()

    params = client.query(
        'SELECT count(*) AS n FROM machine_data WHERE "machineID" = $machine AND rpm >= $rpm',
        query_parameters={"machine": "machine2", "rpm": 1500},
    )
    mask = (frame["machineID"] == "machine2") & (frame["rpm"] >= 1500)
    assert params.column("n").to_pylist() == [int(mask.sum())]

    # Unquoted identifiers are lower-cased, as in Core: machineID needs quotes.
    with pytest.raises(InfluxDB3ClientQueryError):
        client.query("SELECT machineID FROM machine_data")


def test_schema_grows_and_same_series_and_time_keeps_one_row(localflux_server):
    client = localflux_server.client()
    times = pd.to_datetime(["2024-01-01T00:00:00", "2024-01-01T00:00:01", "2024-01-01T00:00:02"])
    writes = [
        (pd.DataFrame({"time": times[:2], "machineID": "m1", "a": [1.0, 2.0]}), ["machineID"]),
        # A new tag and a new field: older rows read them as null.
        (
            pd.DataFrame({"time": times[2:], "machineID": "m1", "provider": "p", "b": [30]}),
            ["machineID", "provider"],
        ),
        # Same series and time as the second row: one row, the last write wins per field.
        (pd.DataFrame({"time": times[1:2], "machineID": "m1", "b": [25]}), ["machineID"]),
    ]
    for frame, tags in writes:
        client.write(
            frame,
            data_frame_measurement_name="growing",
            data_frame_tag_columns=tags,
            data_frame_timestamp_column="time",
        )
    table = client.query("SELECT * FROM growing ORDER BY time")
    assert table.schema.names == ["a", "b", "machineID", "provider", "time"]
    assert table.column("a").to_pylist() == [1.0, 2.0, None]
    assert table.column("b").to_pylist() == [None, 25, 30]
    assert table.column("provider").to_pylist() == [None, None, "p"]
