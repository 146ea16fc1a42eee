"""InfluxDB 3 I/O against a real server: `localflux serve`, or a real InfluxDB 3 in contract mode."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from influx_magic.influx import (
    FEATURES,
    InfluxError,
    InfluxSettings,
    InfluxUnavailable,
    InfluxWriteError,
    connect,
    iter_machine_data,
    load_machine_data,
    read_since,
    write_episodes,
    write_frame,
    write_scores,
)
from tests.pipeline_lib.helpers import event
from tests.support import free_port

T0 = pd.Timestamp("2024-05-01 10:00", tz="UTC")


@pytest.fixture
def influx(localflux_server):
    """Our client factory pointed at the test server."""
    server = localflux_server
    return connect(InfluxSettings(server.url, server.database, server.token or ""))


def telemetry(minutes: int = 10, machines: int = 3) -> pd.DataFrame:
    """Rows as Telegraf writes them: integer fields, extra host/topic tags."""
    seconds = minutes * 60
    frames = []
    for number in range(1, machines + 1):
        frames.append(
            pd.DataFrame(
                {
                    "time": pd.date_range(T0, periods=seconds, freq="1s"),
                    "machineID": f"machine{number}",
                    "provider": "Smith, Jones and Brown",  # a comma and spaces to escape
                    "host": "telegraf",
                    "topic": f"machine/machine{number}",
                    **{
                        f: (np.arange(seconds) % 7 + 10 * i + number)
                        for i, f in enumerate(FEATURES)
                    },
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def write_telemetry(client, frame: pd.DataFrame) -> None:
    tags = ["machineID", "provider", "host", "topic"]
    assert write_frame(client, frame, table="machine_data", tags=tags, fields=FEATURES) == len(
        frame
    )


def test_loader_reads_the_window_in_slices_with_types_settled(influx) -> None:
    write_telemetry(influx, telemetry())
    since, until = T0 + timedelta(minutes=2), T0 + timedelta(minutes=7)

    frame = load_machine_data(influx, since=since, until=until, chunk=timedelta(minutes=1))

    assert len(frame) == 3 * 5 * 60  # [since, until): the point at `until` is not included
    assert frame["time"].min() == since and frame["time"].max() == until - timedelta(seconds=1)
    assert list(frame.columns) == ["time", "machineID", "provider", *FEATURES]
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert all(frame[f].dtype == "float64" for f in FEATURES)
    assert set(frame["machineID"]) == {"machine1", "machine2", "machine3"}
    assert set(frame["provider"]) == {"Smith, Jones and Brown"}
    assert frame["time"].is_monotonic_increasing
    assert not frame.duplicated(["time", "machineID"]).any()

    slices = list(iter_machine_data(influx, since=since, until=until, chunk=timedelta(minutes=1)))
    assert len(slices) == 5 and all(len(s) == 3 * 60 for s in slices)
    one_query = load_machine_data(influx, since=since, until=until, chunk=timedelta(hours=1))
    pd.testing.assert_frame_equal(one_query, frame)


def test_open_ended_read_skips_gaps_and_catches_points_ahead_of_the_clock(influx) -> None:
    now = pd.Timestamp.now(tz="UTC").floor("s")
    frame = telemetry(minutes=1, machines=1)
    recent = frame.assign(time=pd.date_range(now - timedelta(seconds=59), now, freq="1s"))
    ahead = frame.head(1).assign(time=now + timedelta(seconds=30))
    write_telemetry(influx, pd.concat([frame, recent, ahead]))  # an old minute, a long gap

    loaded = load_machine_data(influx, since=T0, chunk=timedelta(minutes=5))
    assert len(loaded) == 60 + 60 + 1
    assert loaded["time"].max() == now + timedelta(seconds=30)


def test_watermark_minus_lateness_returns_late_points(influx) -> None:
    write_telemetry(influx, telemetry(minutes=5, machines=1))
    watermark = T0 + timedelta(minutes=4)  # what the last run saw
    since = read_since(watermark, lookback=timedelta(hours=1), lateness=timedelta(seconds=30))
    late = telemetry(minutes=1, machines=2).tail(1).assign(time=watermark - timedelta(seconds=10))
    write_telemetry(influx, late)  # machine2's point arrived after the last run had read

    frame = load_machine_data(influx, since=since, until=T0 + timedelta(minutes=5))
    assert frame["time"].min() == watermark - timedelta(seconds=30)
    assert ((frame["machineID"] == "machine2") & (frame["time"] < watermark)).sum() == 1


def test_first_run_missing_database_or_table_gives_an_empty_frame(influx) -> None:
    empty = load_machine_data(influx, since=T0, until=T0 + timedelta(hours=1))
    assert empty.empty and list(empty.columns) == ["time", "machineID", "provider", *FEATURES]
    assert str(empty["time"].dtype) == "datetime64[ns, UTC]"

    other = telemetry(minutes=1, machines=1)
    write_frame(influx, other, table="something_else", tags=["machineID"], fields=["load"])
    assert load_machine_data(influx, since=T0, until=T0 + timedelta(hours=1)).empty


def test_values_are_parameters_and_names_are_quoted(influx) -> None:
    write_telemetry(influx, telemetry(minutes=1, machines=1))
    hostile = 'machine_data" WHERE 1=1; --'
    # The whole text is taken as one (unknown) column name: nothing is injected.
    with pytest.raises(InfluxError, match="No field named"):
        load_machine_data(
            influx, since=T0, until=T0 + timedelta(minutes=1), features=["load", hostile]
        )


def test_down_server_is_a_clear_error_naming_the_host() -> None:
    host = f"http://127.0.0.1:{free_port()}"
    client = connect(InfluxSettings(host, "machines"))
    with pytest.raises(InfluxUnavailable, match=f"InfluxDB at {host} .*not reachable"):
        load_machine_data(client, since=T0, until=T0 + timedelta(minutes=1))
    with pytest.raises(InfluxUnavailable, match="not reachable while writing 'anomaly_scores'"):
        write_scores(client, scored(telemetry(minutes=1, machines=1)))


def scored(frame: pd.DataFrame) -> pd.DataFrame:
    score = np.linspace(0, 1, len(frame))
    return frame[["time", "machineID", "provider"]].assign(
        score=score,
        is_anomaly=score > 0.9,
        episode_id=np.where(score > 0.9, "machine1-ep", None),
    )


def test_writer_splits_large_frames_into_bodies_and_keeps_types(influx) -> None:
    frame = scored(telemetry(minutes=20, machines=3))  # 3600 rows, ~100 bytes of LP each
    written = write_frame(
        influx,
        frame,
        table="anomaly_scores",
        tags=["machineID", "provider"],
        fields=["score", "is_anomaly", "episode_id"],
        max_body_bytes=64 * 1024,  # forces several POSTs
    )
    assert written == len(frame)
    counts = influx.query(
        "SELECT count(*) AS n, count(episode_id) AS in_episode, "
        "sum(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS flagged FROM anomaly_scores",
        mode="pandas",
    )
    assert counts.iloc[0].to_dict() == {
        "n": len(frame),
        "in_episode": int((frame["score"] > 0.9).sum()),
        "flagged": int((frame["score"] > 0.9).sum()),
    }
    # write_scores over the same rows overwrites (same series and time), adds nothing
    assert write_scores(influx, frame) == len(frame)
    again = influx.query("SELECT count(*) AS n FROM anomaly_scores", mode="pandas")
    assert again["n"].iloc[0] == len(frame)


def test_rejected_write_raises_with_rows_written_so_far(influx) -> None:
    frame = scored(telemetry(minutes=2, machines=1))
    write_scores(influx, frame.head(60))
    conflicting = frame.assign(score=frame["score"].astype(str))  # score was a float
    with pytest.raises(InfluxWriteError, match=r"anomaly_scores.*HTTP 400") as raised:
        write_frame(
            influx, conflicting, table="anomaly_scores", tags=["machineID"], fields=["score"]
        )
    assert raised.value.rows_written == 0


def test_episode_rows_are_updated_as_the_episode_changes(influx) -> None:
    identities = {f"acme-inc-machine{i}": [f"machine{i}", "Acme Inc"] for i in (2, 3)}
    held = event("machine3").event.episode
    held.announced = False
    assert write_episodes(influx, [event().event.episode, held], identities) == 2
    write_episodes(influx, [event(kind="resolved", bursts=2).event.episode], identities)
    rows = influx.query(
        'SELECT "machineID", provider, status, "end", duration_s, bursts, peak_score, peak_load, '
        'top_features FROM anomaly_episodes ORDER BY "machineID"',
        mode="pandas",
    )
    assert list(rows["machineID"]) == ["machine2", "machine3"]
    machine2 = rows.iloc[0]
    assert machine2["status"] == "resolved" and machine2["duration_s"] == 420.0
    assert machine2["end"] == "2024-05-01T10:07:00.000000000Z" and machine2["bursts"] == 2
    assert machine2["top_features"] == "load,vibration" and machine2["provider"] == "Acme Inc"
    assert machine2["peak_load"] == 200.0
    assert rows.iloc[1]["status"] == "held"  # never announced, still recorded
