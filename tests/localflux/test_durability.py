"""Durability: acknowledged writes survive kill -9 and restarts; storage layout and pruning."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import requests

from tests.localflux.helpers import TIMEOUT, query_sql, rows, write_lp

pytestmark = pytest.mark.localflux_only

BATCH_ROWS = 200
HOUR_NS = 3600 * 10**9


def _batch(writer: str, number: int, base_ns: int) -> str:
    """One request's lines: a unique series per row, so each row can only be stored once."""
    return "\n".join(
        f"m,writer={writer},batch={number},row={i} v={i}i {base_ns + i}" for i in range(BATCH_ROWS)
    )


def _counts(server) -> dict[tuple[str, str], int]:
    result = rows(server, "SELECT writer, batch, count(*) AS n FROM m GROUP BY writer, batch")
    return {(r["writer"], r["batch"]): r["n"] for r in result}


@pytest.mark.slow
def test_kill_9_mid_stream_keeps_every_acknowledged_row_once(localflux_factory):
    # Compact every half second so the kill can also land in a compaction.
    server = localflux_factory(extra_args=["--compact-interval", "0.5"])
    acknowledged: list[tuple[str, str]] = []
    stop = threading.Event()
    base = time.time_ns() - HOUR_NS

    def writer(name: str) -> None:
        number = 0
        while not stop.is_set():
            try:
                response = write_lp(server, _batch(name, number, base + number * 10**6))
            except requests.RequestException:
                return  # the server died mid-request: this batch was never acknowledged
            if response.status_code == 204:
                acknowledged.append((name, str(number)))
            number += 1

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(acknowledged) >= 30

    server.start()
    counts = _counts(server)
    missing = [key for key in acknowledged if key not in counts]
    assert not missing, f"acknowledged but lost: {missing}"
    # Every batch is all or nothing, and no row is there twice.
    assert set(counts.values()) == {BATCH_ROWS}
    total = rows(server, "SELECT count(*) AS n FROM m")[0]["n"]
    assert total == BATCH_ROWS * len(counts)

    # A second, graceful restart (compaction to Parquet, nothing to replay) changes nothing.
    server.restart()
    assert _counts(server) == counts


def test_restart_after_compaction_and_kill_after_more_writes(localflux_factory):
    server = localflux_factory()
    now = time.time_ns()
    first = "\n".join(f"m,host=h{i % 3} v={i}i,w=1 {now - (100 - i) * 10**9}" for i in range(100))
    assert write_lp(server, first).status_code == 204
    server.restart()  # graceful: everything goes to Parquet
    wal_files = list(server.data_dir.glob("db-*/wal/*.wal"))
    assert all(path.stat().st_size == 0 for path in wal_files)
    assert list(server.data_dir.glob("db-*/t-*/*/*.parquet"))
    assert rows(server, "SELECT count(*) AS n FROM m")[0]["n"] == 100

    # Overwrite some persisted rows (same series and time) and add new ones, then crash.
    update = "\n".join(f"m,host=h{i % 3} w=2 {now - (100 - i) * 10**9}" for i in range(50))
    assert write_lp(server, update).status_code == 204
    assert write_lp(server, f"m,host=h9 v=1000i {now}").status_code == 204
    server.kill()
    server.start()
    stored = rows(server, "SELECT v, w FROM m ORDER BY time")
    assert len(stored) == 101
    assert [r["w"] for r in stored[:50]] == [2.0] * 50
    assert [r["w"] for r in stored[50:100]] == [1.0] * 50
    assert [r["v"] for r in stored] == list(range(100)) + [1000]


def test_torn_wal_tail_is_dropped_on_replay(localflux_factory):
    server = localflux_factory()
    assert write_lp(server, "m v=1i 1\nm v=2i 2").status_code == 204
    server.kill()
    segment = max(server.data_dir.glob("db-*/wal/*.wal"))
    with open(segment, "ab") as handle:
        handle.write(b"LFW1\x40\x00\x00\x00\x00\x00\x00\x00half a record")
    server.start()
    assert [r["v"] for r in rows(server, "SELECT v FROM m ORDER BY time")] == [1, 2]
    assert write_lp(server, "m v=3i 3").status_code == 204
    server.restart()
    assert [r["v"] for r in rows(server, "SELECT v FROM m ORDER BY time")] == [1, 2, 3]


def test_data_dir_layout(localflux_factory):
    server = localflux_factory()
    hour = (time.time_ns() // HOUR_NS - 5) * HOUR_NS
    lines = [f"cpu,host=a usage={i}.5 {hour + i * HOUR_NS + 10**9}" for i in range(3)]
    assert write_lp(server, "\n".join(lines)).status_code == 204
    server.stop()
    catalog = json.loads((server.data_dir / "catalog.json").read_text())
    (database,) = catalog["databases"]
    assert database["name"] == "machines"
    (table,) = database["tables"]
    assert table["name"] == "cpu"
    assert table["columns"] == {"host": "tag", "usage": "float"}
    db_dir = server.data_dir / f"db-{database['id']}"
    manifest = json.loads((db_dir / "manifest.json").read_text())
    files = manifest["tables"][str(table["id"])]
    assert len(files) == 3
    hours = sorted(path.parent.name for path in db_dir.glob(f"t-{table['id']}/*/*.parquet"))
    expected = [
        np.datetime64(hour + i * HOUR_NS, "ns")
        .astype("datetime64[h]")
        .item()
        .strftime("%Y-%m-%dT%H")
        for i in range(3)
    ]
    assert hours == expected
    assert (db_dir / "wal").is_dir()


def test_time_predicates_read_only_the_partitions_they_need(localflux_factory):
    server = localflux_factory()
    now = time.time_ns()
    old = [f"m,host=a v={i}i {now - (5 - i) * HOUR_NS}" for i in range(3)]
    assert write_lp(server, "\n".join(old) + f"\nm,host=a v=99i {now}").status_code == 204
    server.stop()
    # Ruin the oldest partition's file: only queries that read it can notice.
    oldest = min(server.data_dir.glob("db-*/t-*/*/*.parquet"), key=lambda p: p.parent.name)
    oldest.write_bytes(b"not parquet")
    server.start()
    recent = query_sql(server, "SELECT v FROM m WHERE time >= now() - interval '1 minute'")
    assert recent.status_code == 200, recent.text
    assert recent.json() == [{"v": 99}]
    everything = query_sql(server, "SELECT count(*) FROM m")
    assert everything.status_code >= 400


def test_concurrent_writers_and_readers_see_whole_writes(localflux_factory):
    server = localflux_factory(extra_args=["--compact-interval", "0.5"])
    stop = threading.Event()
    problems: list[str] = []
    base = time.time_ns() - HOUR_NS

    def writer(name: str) -> None:
        for number in range(25):
            response = write_lp(server, _batch(name, number, base + number * 10**6))
            if response.status_code != 204:
                problems.append(response.text)

    def reader() -> None:
        try:
            check_snapshots()
        except Exception as error:  # a failed assertion in a thread must fail the test
            problems.append(repr(error))

    def check_snapshots() -> None:
        seen = 0
        while not stop.is_set():
            counts = _counts(server)
            if set(counts.values()) - {BATCH_ROWS}:
                problems.append(f"a query saw part of a write: {counts}")
            total = sum(counts.values())
            if total < seen:
                problems.append("a query saw fewer rows than an earlier one")
            seen = total

    assert write_lp(server, _batch("first", 0, base)).status_code == 204  # readers need the table
    writers = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b", "c")]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    stop.set()
    for thread in readers:
        thread.join(timeout=60)
    assert not problems, problems[:3]
    assert sum(_counts(server).values()) == (3 * 25 + 1) * BATCH_ROWS
    response = requests.get(server.url + "/health", timeout=TIMEOUT)
    assert response.status_code == 200
