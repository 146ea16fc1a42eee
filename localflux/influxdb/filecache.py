"""Decoded Parquet files kept in memory, least recently used first out, within a byte budget.

Parquet files never change once written (compaction writes new ones), so a decoded file can
serve every later query; Core keeps a Parquet cache in memory for the same reason. Files are
sorted by time, so the rows of a time range are a zero-copy slice found by binary search.

>>> import pyarrow as pa
>>> cache = FileCache(budget_bytes=1 << 20)
>>> table = pa.table({"time": pa.array([1, 2, 3, 4], pa.timestamp("ns")), "v": [1, 2, 3, 4]})
>>> cache.get("a", lambda: table).between(2, 3).column("v").to_pylist()
[2, 3]
>>> cache.get("a", lambda: 1 / 0).between(None, 1).num_rows  # served from memory
1
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from localflux.influxdb.model import TIME, TIME_TYPE


@dataclass(frozen=True)
class CachedFile:
    table: pa.Table
    times: np.ndarray  # int64 ns
    sorted: bool

    @classmethod
    def of(cls, table: pa.Table) -> CachedFile:
        times = table.column(TIME).combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
        return cls(table, times, bool(np.all(times[1:] >= times[:-1])))

    def between(self, lo: int | None, hi: int | None) -> pa.Table:
        """Rows with lo <= time <= hi (either bound may be None)."""
        if lo is None and hi is None:
            return self.table
        if self.sorted:
            start = 0 if lo is None else int(np.searchsorted(self.times, lo, "left"))
            stop = len(self.times) if hi is None else int(np.searchsorted(self.times, hi, "right"))
            return self.table.slice(start, max(stop - start, 0))
        time = self.table.column(TIME)
        mask = pa.array(np.ones(len(self.times), dtype=bool))
        if lo is not None:
            mask = pc.and_(mask, pc.greater_equal(time, pa.scalar(lo, TIME_TYPE)))
        if hi is not None:
            mask = pc.and_(mask, pc.less_equal(time, pa.scalar(hi, TIME_TYPE)))
        return self.table.filter(mask)


class FileCache:
    """Thread-safe; loading happens outside the lock (two queries may load one file twice)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._entries: OrderedDict[str, CachedFile] = OrderedDict()
        self._bytes = 0
        self.lock = threading.Lock()

    def get(self, key: str, load: Callable[[], pa.Table]) -> CachedFile:
        with self.lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
        entry = CachedFile.of(load())
        self.put(key, entry)
        return entry

    def put(self, key: str, entry: CachedFile) -> None:
        size = entry.table.nbytes
        if size > self.budget:
            return
        with self.lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.table.nbytes
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.budget:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.table.nbytes

    def evict(self, key: str) -> None:
        with self.lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.table.nbytes

    def evict_prefix(self, prefix: str) -> None:
        """Forget every file under a directory (a dropped database)."""
        with self.lock:
            for key in [k for k in self._entries if k.startswith(prefix)]:
                self._bytes -= self._entries.pop(key).table.nbytes
