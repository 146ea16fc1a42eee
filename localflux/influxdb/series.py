"""Series identity and Core's "same series + same time = one row, last write wins per field".

A series is a table's tag set (tags that are null do not count, so a row written before a
tag column existed belongs to the same series as a later row without that tag). The storage
layer numbers series per table and tracks, per time partition, the newest time seen for each
series: a write whose times are all newer than that, with no repeats inside itself, cannot
create a duplicate, which is the common telemetry case and keeps deduplication off the query
path. Only partitions marked dirty pay for `deduplicate`.

>>> import pyarrow as pa
>>> t = pa.table({
...     "host": pa.array(["a", "a", "b"]).dictionary_encode(),
...     "time": pa.array([1, 1, 1], pa.timestamp("ns")),
...     "x": [1.0, None, 3.0], "y": [None, 2, None]})
>>> index = {}
>>> series_ids(t, ["host"], index).tolist(), index
([0, 0, 1], {(('host', 'a'),): 0, (('host', 'b'),): 1})
>>> deduplicate(t, ["host"]).to_pydict()["x"], deduplicate(t, ["host"]).to_pydict()["y"]
([1.0, 3.0], [2, None])
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from localflux.influxdb.model import TIME

NO_TIME = np.iinfo(np.int64).min


# Below this many tag cells a write's series keys are built row by row: per-column numpy
# passes cost more than they save for a few wide lines.
_ROW_BY_ROW_CELLS = 65536


def series_ids(table: pa.Table, tag_names: list[str], index: dict[tuple, int]) -> np.ndarray:
    """Per-row series numbers; new series are added to `index` (tag set -> number)."""
    rows = table.num_rows
    names = set(table.column_names)  # a set: `in` on the list would be quadratic in tags
    present = [name for name in sorted(tag_names) if name in names]
    if rows * len(present) <= _ROW_BY_ROW_CELLS:
        columns = [(name, table.column(name).to_pylist()) for name in present]
        keys = [
            tuple((name, values[row]) for name, values in columns if values[row] is not None)
            for row in range(rows)
        ]
        return np.array([index.setdefault(key, len(index)) for key in keys], dtype=np.int64)
    codes = np.zeros(rows, dtype=np.int64)
    for name in present:
        column = table.column(name).combine_chunks()
        if isinstance(column.type, pa.DictionaryType):
            indices = column.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            width = len(column.dictionary) + 1
        else:
            encoded = pc.dictionary_encode(column)
            indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            width = len(encoded.dictionary) + 1
        combined = codes * width + (indices.astype(np.int64) + 1)
        # Renumber densely so the mixed-radix code never overflows however many tags there are.
        _, codes = np.unique(combined, return_inverse=True)
        codes = codes.astype(np.int64)
    if rows == 0:
        return codes
    unique, first = np.unique(codes, return_index=True)
    columns = {name: table.column(name).take(pa.array(first)).to_pylist() for name in present}
    mapping = np.empty(len(unique), dtype=np.int64)
    for position in range(len(unique)):
        key = tuple(
            (name, columns[name][position])
            for name in present
            if columns[name][position] is not None
        )
        number = index.get(key)
        if number is None:
            number = index[key] = len(index)
        mapping[position] = number
    return mapping[np.searchsorted(unique, codes)]


def time_values(table: pa.Table) -> np.ndarray:
    return table.column(TIME).combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)


class SeriesClock:
    """The newest time seen per series in one partition (NO_TIME for unseen series)."""

    def __init__(self) -> None:
        self.newest = np.full(0, NO_TIME, dtype=np.int64)

    def observe(self, series: np.ndarray, times: np.ndarray) -> bool:
        """Record rows; True when they may repeat a (series, time) seen before or among them."""
        if len(series) == 0:
            return False
        order = np.lexsort((times, series))
        s, t = series[order], times[order]
        same_series = s[1:] == s[:-1]
        repeats = bool(np.any(same_series & (t[1:] == t[:-1])))
        starts = np.flatnonzero(np.concatenate(([True], ~same_series)))
        ends = np.concatenate((starts[1:] - 1, [len(s) - 1]))
        ids, oldest, newest = s[starts], t[starts], t[ends]
        if ids[-1] >= len(self.newest):
            grown = np.full(ids[-1] + 1, NO_TIME, dtype=np.int64)
            grown[: len(self.newest)] = self.newest
            self.newest = grown
        overlaps = bool(np.any(oldest <= self.newest[ids]))
        self.newest[ids] = np.maximum(self.newest[ids], newest)
        return repeats or overlaps


def deduplicate(table: pa.Table, tag_names: list[str]) -> pa.Table:
    """One row per (tags, time): the last non-null value of each field, in row order."""
    names = set(table.column_names)
    keys = [name for name in tag_names if name in names] + [TIME]
    key_set = set(keys)
    fields = [name for name in table.column_names if name not in key_set]
    # Chunks written at different times carry different tag dictionaries.
    table = table.unify_dictionaries()
    grouped = table.group_by(keys, use_threads=False).aggregate([(name, "last") for name in fields])
    # Aggregates come out as "<field>_last"; pyarrow versions differ on whether keys go first.
    keys_first = grouped.column_names[: len(keys)] == keys
    renamed = grouped.rename_columns(keys + fields if keys_first else fields + keys)
    return renamed.select(table.column_names).sort_by(TIME)
