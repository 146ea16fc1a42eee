"""Durable, time-partitioned table storage: WAL + in-memory buffer + Parquet, per database.

Write path (one database's writes are serialised by its write lock):
  resolve column kinds against the catalog -> save the catalog if it grew -> append one WAL
  record (Arrow IPC of each table's rows) and fsync it -> publish the rows to the in-memory
  buffer of their hour partition. Only then is the write acknowledged, and only then can a
  query see it; a query copies the partition lists under the state lock, so it sees each
  write entirely or not at all.

Compaction (every `compact_interval` seconds with data, or at `compact_rows` buffered rows,
and at shutdown) rotates the WAL, writes each touched partition's buffered rows as a Parquet
file sorted by time, records the files in the database's manifest, and deletes the WAL
segments it covered. A restart loads the manifest and replays the remaining segments.

Layout of the data dir is documented in localflux/README.md.

Deduplication: see `localflux.influxdb.series`. A partition is marked dirty only when a write may
repeat a (series, time) pair; queries deduplicate dirty partitions (cached per version) and
compaction merges them into one clean file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from localflux.influxdb.catalog import Catalog, DatabaseDef, TableDef
from localflux.influxdb.filecache import CachedFile, FileCache
from localflux.influxdb.ingest import build_table, resolve
from localflux.influxdb.lineprotocol import LineError, LineGroup, Parsed, to_nanoseconds
from localflux.influxdb.model import TIME
from localflux.influxdb.series import SeriesClock, deduplicate, series_ids, time_values
from localflux.influxdb.wal import Wal, decode_tables, encode_tables, read_segment, segments
from magic_common.atomic import fsync_dir, write_atomically

log = logging.getLogger(__name__)

HOUR_NS = 3600 * 10**9
MANIFEST_FORMAT = 1
# A clean partition gets one file per compaction; past this many they are merged into one.
MAX_FILES_PER_PARTITION = 8
ROW_GROUP_ROWS = 65536
# Small writes (one per second from a bridge) are merged so a partition stays a few chunks.
MAX_BUFFER_ENTRIES = 32


class StorageError(Exception):
    """Base class for errors the API layers turn into responses."""


class DatabaseNotFound(StorageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"database not found: {name}")
        self.name = name


class DatabaseExists(StorageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"attempted to create a resource that already exists: {name}")
        self.name = name


class WriteRejected(StorageError):
    """A write that was not applied at all because of this (first) bad line."""

    def __init__(self, error: LineError) -> None:
        super().__init__(error.message)
        self.error = error


class DataDirLocked(StorageError):
    pass


@dataclass
class DataFile:
    path: str  # relative to the database directory
    rows: int
    min_time: int
    max_time: int
    columns: list[str]

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.path,
            "rows": self.rows,
            "min_time": self.min_time,
            "max_time": self.max_time,
            "columns": self.columns,
        }


@dataclass(eq=False)
class Partition:
    """One table's rows for one hour: Parquet files plus rows not yet compacted."""

    hour: int
    files: list[DataFile] = field(default_factory=list)
    buffer: list[pa.Table] = field(default_factory=list)
    frozen: int = 0  # leading buffer entries a running compaction is writing out
    clock: SeriesClock | None = None  # None until needed after a restart (files only)
    dirty: bool = False
    dirty_marks: int = 0
    version: int = 0
    deduplicated: tuple[int, pa.Table] | None = None

    @property
    def start(self) -> int:
        return self.hour * HOUR_NS

    def overlaps(self, lo: int | None, hi: int | None) -> bool:
        return (hi is None or self.start <= hi) and (lo is None or self.start + HOUR_NS > lo)


@dataclass(eq=False)
class TableState:
    definition: TableDef
    partitions: dict[int, Partition] = field(default_factory=dict)
    series: dict[tuple, int] = field(default_factory=dict)


@dataclass(eq=False)
class Database:
    definition: DatabaseDef
    directory: Path
    wal: Wal | None = None
    tables: dict[int, TableState] = field(default_factory=dict)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    compact_lock: threading.Lock = field(default_factory=threading.Lock)
    wal_through: int = 0
    next_file: int = 1
    buffered_rows: int = 0
    unpersisted_since: float | None = None
    deleted: bool = False

    def table(self, definition: TableDef) -> TableState:
        state = self.tables.get(definition.id)
        if state is None:
            state = self.tables[definition.id] = TableState(definition)
        return state


@dataclass
class SnapshotFile:
    data_file: DataFile
    path: Path
    source: pa.NativeFile | None = None  # opened at snapshot time, so deletion cannot hurt


@dataclass
class PartitionSnapshot:
    partition: Partition
    version: int
    files: list[SnapshotFile]
    buffer: list[pa.Table]
    dirty: bool
    deduplicated: pa.Table | None


@dataclass
class TableSnapshot:
    definition: TableDef
    schema: pa.Schema
    partitions: list[PartitionSnapshot]


@dataclass
class _Job:
    table: TableState
    partition: Partition
    buffer: list[pa.Table]
    files: list[DataFile]
    dirty: bool
    dirty_marks: int
    number: int


class Store:
    """All databases in one data dir. Thread-safe; one Store per data dir (a lock file)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        compact_rows: int = 1_000_000,
        compact_interval: float = 60.0,
        cache_bytes: int = 512 * 1024 * 1024,
    ) -> None:
        self.data_dir = data_dir
        self.compact_rows = compact_rows
        self.compact_interval = compact_interval
        self.files = FileCache(cache_bytes)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(data_dir / "lock", "a+b")  # noqa: SIM115 - held for our lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DataDirLocked(f"{data_dir} is in use by another localflux server") from None
        self._lock = threading.RLock()
        self.catalog = Catalog.load(data_dir / "catalog.json")
        self._dbs: dict[str, Database] = {}
        for definition in list(self.catalog.databases.values()):
            self._dbs[definition.name] = self._open_database(definition)
        self._stop = threading.Event()
        self._compactor: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start_compactor(self) -> None:
        """Compact in the background: every second, each database that is due."""
        self._compactor = threading.Thread(target=self._compact_loop, name="compactor", daemon=True)
        self._compactor.start()

    def close(self) -> None:
        """Compact everything (so a restart has nothing to replay), then release the dir."""
        self._stop.set()
        if self._compactor is not None:
            self._compactor.join()
        for db in list(self._dbs.values()):
            self._compact(db)
            with db.write_lock:
                if db.wal is not None:
                    db.wal.close()
        self._lock_file.close()

    def _compact_loop(self) -> None:
        while not self._stop.wait(1.0):
            for db in list(self._dbs.values()):
                due = db.buffered_rows >= self.compact_rows or (
                    db.unpersisted_since is not None
                    and time.monotonic() - db.unpersisted_since >= self.compact_interval
                )
                if due:
                    try:
                        self._compact(db)
                    except Exception:
                        log.exception(
                            "compaction of %s failed; its WAL is kept", db.definition.name
                        )

    @contextlib.contextmanager
    def fork_guard(self) -> Iterator[None]:
        """Hold every lock a reader takes, for forking a query process: a child gets a copy
        of memory in which no other thread holds one of them (and releases its copies when
        the block ends, as the parent does)."""
        with self._lock, self.files.lock:
            yield

    # --- databases ---------------------------------------------------------------------------

    def database_names(self) -> list[str]:
        with self._lock:
            return sorted(self._dbs)

    def create_database(self, name: str) -> None:
        with self._lock:
            if name in self._dbs:
                raise DatabaseExists(name)
            self._create_database(name)

    def delete_database(self, name: str) -> None:
        with self._lock:
            db = self._dbs.get(name)
        if db is None:
            raise DatabaseNotFound(name)
        with db.compact_lock, db.write_lock:
            with self._lock:
                db.deleted = True
                self._dbs.pop(name, None)
                self.catalog.drop_database(name)
                self.catalog.save()
            if db.wal is not None:
                db.wal.close()
            self.files.evict_prefix(str(db.directory) + os.sep)
            shutil.rmtree(db.directory, ignore_errors=True)

    def tables(self, db_name: str) -> dict[str, TableDef]:
        """The database's table definitions (raises DatabaseNotFound)."""
        with self._lock:
            db = self._dbs.get(db_name)
            if db is None:
                raise DatabaseNotFound(db_name)
            return {
                name: TableDef(t.id, t.name, t.columns) for name, t in db.definition.tables.items()
            }

    def _create_database(self, name: str) -> Database:
        definition = self.catalog.create_database(name)
        self.catalog.save()
        db = Database(definition, self.data_dir / f"db-{definition.id}")
        db.directory.mkdir(parents=True, exist_ok=True)
        db.wal = Wal.open(db.directory / "wal")
        self._dbs[name] = db
        return db

    # --- writes ------------------------------------------------------------------------------

    def write(
        self,
        db_name: str,
        parsed: Parsed,
        *,
        precision: str,
        now_ns: int,
        accept_partial: bool,
        no_sync: bool,
    ) -> list[LineError]:
        """Store every valid line; return the rejected ones (or raise WriteRejected)."""
        timed = to_nanoseconds(parsed, precision, now_ns)
        while True:
            with self._lock:
                db = self._dbs.get(db_name)
            if db is None:
                # Validate before creating the database: a write that stores nothing creates
                # nothing.
                errors, valid, _ = resolve({}, parsed, timed)
                if errors and not accept_partial:
                    raise WriteRejected(errors[0])
                if not valid:
                    return errors
                with self._lock:
                    db = self._dbs.get(db_name) or self._create_database(db_name)
            with db.write_lock:
                if not db.deleted:
                    return self._write_locked(db, parsed, timed, accept_partial, no_sync)

    def _write_locked(
        self,
        db: Database,
        parsed: Parsed,
        timed: list[tuple[LineGroup, np.ndarray]],
        accept_partial: bool,
        no_sync: bool,
    ) -> list[LineError]:
        with self._lock:
            existing = {name: t.columns for name, t in db.definition.tables.items()}
        errors, valid, added = resolve(existing, parsed, timed)
        if errors and not accept_partial:
            raise WriteRejected(errors[0])
        if not valid:
            return errors
        tables = {name: build_table(groups) for name, groups in valid.items()}
        with self._lock:
            grown = False
            definitions = {}
            for name in tables:
                before = db.definition.tables.get(name)
                grown = grown or before is None or bool(added[name].keys() - before.columns.keys())
                definitions[name] = self.catalog.add_columns(db.definition, name, added[name])
            if grown:
                self.catalog.save()
        by_id = {definitions[name].id: table for name, table in tables.items()}
        assert db.wal is not None
        db.wal.append(encode_tables(by_id), sync=not no_sync)
        self._publish(db, [(definitions[name], table) for name, table in tables.items()])
        return errors

    def _publish(self, db: Database, tables: list[tuple[TableDef, pa.Table]]) -> None:
        """Make acknowledged rows queryable (called with the database's write lock held)."""
        staged = []
        for definition, table in tables:
            with self._lock:
                state = db.table(definition)
            ids = series_ids(table, definition.tag_names(), state.series)
            times = time_values(table)
            hours = np.floor_divide(times, HOUR_NS)
            if hours.min() == hours.max():
                parts = [(int(hours[0]), table, ids, times)]
            else:
                parts = []
                for hour in np.unique(hours):
                    mask = hours == hour
                    parts.append((int(hour), table.filter(pa.array(mask)), ids[mask], times[mask]))
            for hour, rows, part_ids, part_times in parts:
                with self._lock:
                    partition = state.partitions.setdefault(
                        hour, Partition(hour, clock=SeriesClock())
                    )
                    files = list(partition.files)
                if partition.clock is None:
                    partition.clock = self._clock_from_files(db, state, files)
                dirty = partition.clock.observe(part_ids, part_times)
                staged.append((partition, rows, dirty))
        with self._lock:
            for partition, rows, dirty in staged:
                partition.buffer.append(rows)
                if len(partition.buffer) - partition.frozen > MAX_BUFFER_ENTRIES:
                    merged = pa.concat_tables(
                        partition.buffer[partition.frozen :], promote_options="default"
                    ).combine_chunks()
                    partition.buffer[partition.frozen :] = [merged]
                if dirty:
                    partition.dirty = True
                    partition.dirty_marks += 1
                partition.version += 1
                db.buffered_rows += rows.num_rows
            if db.unpersisted_since is None:
                db.unpersisted_since = time.monotonic()

    def _clock_from_files(
        self, db: Database, state: TableState, files: list[DataFile]
    ) -> SeriesClock:
        """Rebuild a partition's per-series newest times from its Parquet files (after restart)."""
        clock = SeriesClock()
        tags = state.definition.tag_names()
        tag_set = set(tags)
        for data_file in files:
            columns = [c for c in data_file.columns if c in tag_set] + [TIME]
            table = pq.read_table(db.directory / data_file.path, columns=columns)
            clock.observe(series_ids(table, tags, state.series), time_values(table))
        return clock

    # --- reads -------------------------------------------------------------------------------

    def snapshot(
        self, db_name: str, ranges: dict[str, tuple[int | None, int | None]]
    ) -> dict[str, TableSnapshot]:
        """A consistent view of the partitions of each table that overlap its time range."""
        with self._lock:
            db = self._dbs.get(db_name)
            if db is None:
                raise DatabaseNotFound(db_name)
            result = {}
            for name, (lo, hi) in ranges.items():
                definition = db.definition.tables.get(name)
                if definition is None:
                    continue
                definition = TableDef(definition.id, definition.name, definition.columns)
                state = db.tables.get(definition.id)
                partitions = []
                for partition in state.partitions.values() if state else ():
                    if not partition.overlaps(lo, hi):
                        continue
                    cached = partition.deduplicated
                    partitions.append(
                        PartitionSnapshot(
                            partition,
                            partition.version,
                            [SnapshotFile(f, db.directory / f.path) for f in partition.files],
                            list(partition.buffer),
                            partition.dirty,
                            cached[1] if cached and cached[0] == partition.version else None,
                        )
                    )
                partitions.sort(key=lambda p: p.partition.hour)
                result[name] = TableSnapshot(definition, definition.schema(), partitions)
            # Open the files now: compaction may delete them later, an open file stays readable.
            for table in result.values():
                for part in table.partitions:
                    for snapshot_file in part.files:
                        snapshot_file.source = pa.memory_map(str(snapshot_file.path))
            return result

    def read(
        self,
        table: TableSnapshot,
        part: PartitionSnapshot,
        columns: list[str],
        lo: int | None,
        hi: int | None,
    ) -> Iterator[pa.Table]:
        """The partition's rows (only `columns` where possible), deduplicated if needed."""
        if part.dirty:
            full = part.deduplicated
            if full is None:
                full = deduplicate(_concat(self._all_rows(part)), table.definition.tag_names())
                with self._lock:
                    if part.partition.version == part.version:
                        part.partition.deduplicated = (part.version, full)
            have = set(full.column_names)
            yield full.select([c for c in columns if c in have])
            return
        for snapshot_file in part.files:
            data_file = snapshot_file.data_file
            if (
                lo is not None
                and data_file.max_time < lo
                or hi is not None
                and data_file.min_time > hi
            ):
                continue
            rows = self._cached(snapshot_file).between(lo, hi)
            have = set(data_file.columns)
            yield rows.select([c for c in columns if c in have] or [TIME])
        for rows in part.buffer:
            have = set(rows.column_names)
            yield rows.select([c for c in columns if c in have])

    def _cached(self, snapshot_file: SnapshotFile) -> CachedFile:
        source = snapshot_file.source
        return self.files.get(
            str(snapshot_file.path), lambda: pq.read_table(source or snapshot_file.path)
        )

    def _all_rows(self, part: PartitionSnapshot) -> list[pa.Table]:
        return [self._cached(f).table for f in part.files] + part.buffer

    # --- compaction --------------------------------------------------------------------------

    def compact(self, db_name: str | None = None) -> None:
        """Persist buffered rows now (one database or all)."""
        with self._lock:
            targets = [self._dbs[db_name]] if db_name else list(self._dbs.values())
        for db in targets:
            self._compact(db)

    def _compact(self, db: Database) -> None:
        with db.compact_lock:
            with db.write_lock, self._lock:
                if db.deleted or db.wal is None:
                    return
                jobs = []
                for state in db.tables.values():
                    for partition in state.partitions.values():
                        if partition.buffer:
                            partition.frozen = len(partition.buffer)
                            jobs.append(
                                _Job(
                                    state,
                                    partition,
                                    list(partition.buffer),
                                    list(partition.files),
                                    partition.dirty,
                                    partition.dirty_marks,
                                    db.next_file,
                                )
                            )
                            db.next_file += 1
                if not jobs:
                    return
                through = db.wal.rotate()
                db.buffered_rows = 0
                db.unpersisted_since = None
            started = time.monotonic()
            written = [self._write_job(db, job) for job in jobs]
            replaced: list[DataFile] = []
            with self._lock:
                for job, (new_file, merged) in zip(jobs, written, strict=True):
                    partition = job.partition
                    if merged:
                        replaced.extend(job.files)
                        partition.files = [f for f in partition.files if f not in job.files]
                    partition.files.append(new_file)
                    del partition.buffer[: partition.frozen]
                    partition.frozen = 0
                    if job.dirty and partition.dirty_marks == job.dirty_marks:
                        partition.dirty = False
                    partition.version += 1
                    partition.deduplicated = None
                db.wal_through = through
                self._save_manifest(db)
            for data_file in replaced:
                self.files.evict(str(db.directory / data_file.path))
                (db.directory / data_file.path).unlink(missing_ok=True)
            db.wal.delete_through(through)
            log.info(
                "compacted %s: %d rows into %d files in %.2fs",
                db.definition.name,
                sum(f.rows for f, _ in written),
                len(written),
                time.monotonic() - started,
            )

    def _write_job(self, db: Database, job: _Job) -> tuple[DataFile, bool]:
        """Write the job's rows as one Parquet file; merge the old files in if needed."""
        merge = job.dirty or len(job.files) + 1 > MAX_FILES_PER_PARTITION
        pieces = list(job.buffer)
        if merge:
            pieces = [
                self._cached(SnapshotFile(f, db.directory / f.path)).table for f in job.files
            ] + pieces
        table = _concat(pieces)
        if job.dirty:
            table = deduplicate(table, job.table.definition.tag_names())
        else:
            table = table.sort_by(TIME)
        hour = datetime.fromtimestamp(job.partition.hour * 3600, UTC).strftime("%Y-%m-%dT%H")
        relative = f"t-{job.table.definition.id}/{hour}/{job.number:08d}.parquet"
        path = db.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        cached = CachedFile.of(table)
        self.files.put(str(path), cached)  # the next query need not read it back
        data_file = DataFile(
            relative,
            table.num_rows,
            int(cached.times.min()),
            int(cached.times.max()),
            table.column_names,
        )
        return data_file, merge

    # --- manifest, startup and replay --------------------------------------------------------

    def _save_manifest(self, db: Database) -> None:
        tables: dict[str, list[dict[str, object]]] = {}
        for table_id, state in db.tables.items():
            tables[str(table_id)] = [
                {"hour": p.hour, **f.as_json()}
                for p in sorted(state.partitions.values(), key=lambda p: p.hour)
                for f in p.files
            ]
        manifest = {
            "format": MANIFEST_FORMAT,
            "wal_through": db.wal_through,
            "next_file": db.next_file,
            "tables": tables,
        }
        write_atomically(db.directory / "manifest.json", json.dumps(manifest).encode())

    def _open_database(self, definition: DatabaseDef) -> Database:
        db = Database(definition, self.data_dir / f"db-{definition.id}")
        db.directory.mkdir(parents=True, exist_ok=True)
        by_id = {t.id: t for t in definition.tables.values()}
        manifest_path = db.directory / "manifest.json"
        known: set[str] = set()
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            db.wal_through = manifest["wal_through"]
            db.next_file = manifest["next_file"]
            for table_id, entries in manifest["tables"].items():
                definition_for = by_id.get(int(table_id))
                if definition_for is None:
                    continue
                state = db.table(definition_for)
                for entry in entries:
                    partition = state.partitions.setdefault(entry["hour"], Partition(entry["hour"]))
                    partition.files.append(
                        DataFile(
                            entry["file"],
                            entry["rows"],
                            entry["min_time"],
                            entry["max_time"],
                            entry["columns"],
                        )
                    )
                    known.add(entry["file"])
        # Files a crash left behind before the manifest named them: their rows are in the WAL.
        for path in list(db.directory.glob("t-*/*/*")):
            if path.relative_to(db.directory).as_posix() not in known:
                path.unlink()
        wal_dir = db.directory / "wal"
        wal_dir.mkdir(exist_ok=True)
        replayed = 0
        last = db.wal_through
        for number, path in segments(wal_dir):
            last = max(last, number)
            if number <= db.wal_through:
                path.unlink()
                continue
            for payload in read_segment(path):
                tables = decode_tables(payload)
                self._publish(db, [(by_id[i], t) for i, t in tables.items() if i in by_id])
                replayed += sum(t.num_rows for t in tables.values())
        db.wal = Wal.open(wal_dir, after=last)
        if replayed:
            log.info("%s: replayed %d rows from the write-ahead log", definition.name, replayed)
        return db


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
