"""The store in-process: deduplication, compaction, reopening, snapshots."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localflux.influxdb import lineprotocol as lp
from localflux.influxdb.query import QueryEngine
from localflux.influxdb.storage import MAX_FILES_PER_PARTITION, DataDirLocked, Store, WriteRejected

DB = "machines"


def write(store: Store, body: str, **options: object) -> list[lp.LineError]:
    settings = {"precision": "s", "now_ns": time.time_ns(), "accept_partial": True, "no_sync": True}
    settings.update(options)
    return store.write(DB, lp.parse(body.encode()), **settings)


def values(store: Store, sql: str) -> list[dict[str, object]]:
    return QueryEngine(store).query(DB, sql).to_pylist()


def partitions(store: Store):
    (db,) = store._dbs.values()
    (table,) = db.tables.values()
    return list(table.partitions.values())


def test_in_order_telemetry_never_needs_deduplication(tmp_path: Path):
    store = Store(tmp_path)
    for second in range(0, 300, 10):
        write(
            store,
            "\n".join(
                f"m,host=h{h} v={second + i} {second + i}" for i in range(10) for h in range(3)
            ),
        )
    assert not any(p.dirty for p in partitions(store))
    assert values(store, "SELECT count(*) AS n FROM m") == [{"n": 900}]
    store.close()


def test_repeated_series_and_time_are_merged_per_field(tmp_path: Path):
    store = Store(tmp_path)
    write(store, "m,host=a x=1,y=1 10\nm,host=b x=5 10")
    write(store, "m,host=a y=2,z=3 10")  # same series and time: a dirty partition
    assert [p.dirty for p in partitions(store)] == [True]
    expected = [
        {"host": "a", "time": 10, "x": 1.0, "y": 2.0, "z": 3.0},
        {"host": "b", "time": 10, "x": 5.0, "y": None, "z": None},
    ]

    def stored() -> list[dict[str, object]]:
        rows = values(
            store,
            "SELECT host, CAST(time AS BIGINT) / 1000000000 AS time, x, y, z FROM m ORDER BY host",
        )
        return rows

    assert stored() == expected
    store.compact()
    assert [(p.dirty, len(p.files), len(p.buffer)) for p in partitions(store)] == [(False, 1, 0)]
    assert stored() == expected
    write(store, "m,host=a x=9 10")  # overwrite a persisted row
    assert [p.dirty for p in partitions(store)] == [True]
    store.close()

    reopened = Store(tmp_path)
    store = reopened
    assert stored()[0]["x"] == 9.0
    reopened.close()


def test_a_write_after_restart_into_persisted_hour_is_checked_against_its_files(tmp_path: Path):
    store = Store(tmp_path)
    write(store, "m,host=a x=1 10\nm,host=a x=2 20")
    store.close()
    store = Store(tmp_path)
    write(store, "m,host=a y=5 20")  # same series and time as a row only in Parquet
    assert [p.dirty for p in partitions(store)] == [True]
    rows = values(store, "SELECT x, y FROM m ORDER BY time")
    assert rows == [{"x": 1.0, "y": None}, {"x": 2.0, "y": 5.0}]
    write(store, "m,host=a x=3 30")  # newer than everything: no new dirt
    store.compact()
    assert [p.dirty for p in partitions(store)] == [False]
    store.close()


def test_clean_partitions_append_files_and_merge_when_there_are_many(tmp_path: Path):
    store = Store(tmp_path)
    for i in range(MAX_FILES_PER_PARTITION + 1):
        write(store, f"m,host=a x={i} {i}")
        store.compact()
    (partition,) = partitions(store)
    assert len(partition.files) == 1
    assert values(store, "SELECT count(*) AS n FROM m") == [{"n": MAX_FILES_PER_PARTITION + 1}]
    assert len(list(tmp_path.glob("db-*/t-*/*/*.parquet"))) == 1
    store.close()


def test_snapshots_are_unaffected_by_later_writes_and_compaction(tmp_path: Path):
    store = Store(tmp_path)
    write(store, "m,host=a x=1 1")
    store.compact()
    write(store, "m,host=a x=2 2")
    snapshot = store.snapshot(DB, {"m": (None, None)})
    write(store, "m,host=a x=3 3")
    store.compact()  # replaces nothing here, but deletes the WAL and adds a file
    table = snapshot["m"]
    seen = [
        piece.column("x").to_pylist()
        for part in table.partitions
        for piece in store.read(table, part, ["x", "time"], None, None)
    ]
    assert sorted(x for chunk in seen for x in chunk) == [1.0, 2.0]
    store.close()


def test_rejected_writes_change_nothing(tmp_path: Path):
    store = Store(tmp_path)
    write(store, "m x=1i 1")
    with pytest.raises(WriteRejected) as rejected:
        write(store, "m y=1 2\nm x=2.5 3", accept_partial=False)
    assert rejected.value.error.line_number == 2
    assert set(store.tables(DB)["m"].columns) == {"x"}
    assert values(store, "SELECT count(*) AS n FROM m") == [{"n": 1}]
    store.close()


def test_one_store_per_data_dir(tmp_path: Path):
    store = Store(tmp_path)
    with pytest.raises(DataDirLocked):
        Store(tmp_path)
    store.close()


def test_a_write_that_stores_nothing_creates_no_database(tmp_path: Path):
    store = Store(tmp_path)
    assert [e.line_number for e in write(store, "m f=NaN 1")] == [1]
    with pytest.raises(WriteRejected):
        write(store, "m f=1 1\nm f=NaN 2", accept_partial=False)
    assert store.database_names() == []
    write(store, "m f=1 1")
    assert store.database_names() == [DB]
    store.close()
