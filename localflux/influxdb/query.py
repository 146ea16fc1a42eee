"""SQL with DataFusion (Core's engine), reading only the partitions and columns a query needs.

Each query plans twice in a fresh session. The first plan runs against empty tables with the
real schemas; DataFusion's optimizer folds `now() - interval '1 minute'`, `$params` and
BETWEEN into timestamp literals and pushes projections down to the scans, so walking the
optimized plan tells, per table, the time range and the columns needed. The store then
snapshots only the hour partitions overlapping that range, reads only those columns (the
rest are null), and the second plan runs over that data. A query over the last minute thus
touches the same data after a day of history as after an hour.

>>> scans = Scan(None, None, set()).merge(Scan(5, 10, {"a"}))
>>> (scans.lo, scans.hi, scans.columns)
(None, None, {'a'})
>>> Scan.from_json(Scan(5, 10, {"a"}).as_json())
Scan(lo=5, hi=10, columns={'a'})
>>> repeated = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2], pa.int32()), ["a", "b", "a"])
>>> unique_dictionaries(pa.table({"k": repeated})).column("k").chunk(0).dictionary.to_pylist()
['a', 'b']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from localflux.influxdb.model import TIME
from localflux.influxdb.storage import DatabaseNotFound, Store, TableSnapshot

if TYPE_CHECKING:
    from datafusion import LogicalPlan, SessionContext, SQLOptions
# Both plans call now(); widen the pruning range so the second call's later "now" still fits.
_MARGIN_NS = 60 * 10**9
_UNIT_NS = {"ns": 1, "Nanosecond": 1, "µs": 10**3, "us": 10**3, "Microsecond": 10**3}
_UNIT_NS.update({"ms": 10**6, "Millisecond": 10**6, "s": 10**9, "Second": 10**9})
_TIMESTAMP_UNIT = re.compile(r"Timestamp\((\w+|µs)")


class QueryError(ValueError):
    """The SQL could not be planned or run; the message is DataFusion's."""


@dataclass
class Scan:
    """What one table contributes to a query: a time range and the columns read."""

    lo: int | None
    hi: int | None
    columns: set[str] | None  # None: every column

    def as_json(self) -> list[object]:
        return [self.lo, self.hi, None if self.columns is None else sorted(self.columns)]

    @classmethod
    def from_json(cls, value: list[object]) -> Scan:
        lo, hi, columns = value
        return cls(lo, hi, None if columns is None else set(columns))  # type: ignore[arg-type]

    def merge(self, other: Scan) -> Scan:
        return Scan(
            None if self.lo is None or other.lo is None else min(self.lo, other.lo),
            None if self.hi is None or other.hi is None else max(self.hi, other.hi),
            None if self.columns is None or other.columns is None else self.columns | other.columns,
        )


def plan_scans(plan: LogicalPlan) -> dict[str, Scan]:
    """Time range and columns per user table scanned by an optimized plan."""
    scans: dict[str, Scan] = {}

    def visit(node: LogicalPlan, conjuncts: list[object]) -> None:
        variant = node.to_variant()
        kind = type(variant).__name__
        if kind == "TableScan":
            _, schema, name = variant.fqn()
            if schema not in (None, "iox"):
                return
            lo, hi = _time_bounds([*conjuncts, *variant.filters()], name)
            projection = variant.projection()
            columns = {column for _, column in projection} if projection is not None else None
            scan = Scan(lo, hi, columns)
            scans[name] = scans[name].merge(scan) if name in scans else scan
            return
        below = [*conjuncts, *_conjuncts(variant.predicate())] if kind == "Filter" else []
        for child in node.inputs():
            visit(child, below)

    visit(plan, [])
    return scans


def _variant(expr: object) -> object | None:
    """The expression's Python form, or None where the datafusion bindings have none (some
    scalar functions, e.g. `md5(...)`): such a conjunct only does not narrow the scan."""
    try:
        return expr.to_variant()
    except Exception:  # noqa: BLE001 - the bindings raise a bare Exception ("not implemented")
        return None


def _conjuncts(expr: object) -> list[object]:
    variant = _variant(expr)
    if type(variant).__name__ == "BinaryExpr" and str(variant.op()).upper() == "AND":
        return _conjuncts(variant.left()) + _conjuncts(variant.right())
    return [expr]


_FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "="}


def _time_bounds(exprs: list[object], table: str) -> tuple[int | None, int | None]:
    lo = hi = None
    for expr in exprs:
        variant = _variant(expr)
        if type(variant).__name__ != "BinaryExpr":
            continue
        op = str(variant.op())
        left, right = _variant(variant.left()), _variant(variant.right())
        if _is_time(right, table) and type(left).__name__ == "Literal":
            left, right, op = right, left, _FLIPPED.get(op, "")
        if not (_is_time(left, table) and type(right).__name__ == "Literal"):
            continue
        value = _timestamp_ns(right)
        if value is None:
            continue
        if op in (">", ">=", "="):
            lo = value if lo is None else max(lo, value)
        if op in ("<", "<=", "="):
            hi = value if hi is None else min(hi, value)
    return (
        None if lo is None else lo - _MARGIN_NS,
        None if hi is None else hi + _MARGIN_NS,
    )


def _is_time(variant: object, table: str) -> bool:
    if type(variant).__name__ != "Column" or variant.name() != TIME:
        return False
    relation = variant.relation()
    return relation is None or str(relation).split(".")[-1].strip('"') == table


def _timestamp_ns(literal: object) -> int | None:
    match = _TIMESTAMP_UNIT.match(str(literal.data_type()))
    if match is None or match.group(1) not in _UNIT_NS:
        return None
    value, _ = literal.value_timestamp()
    return None if value is None else int(value) * _UNIT_NS[match.group(1)]


def _quoted(table: str) -> str:
    """A table name as one quoted SQL identifier: registration parses names, and a
    measurement may hold dots, quotes or capitals.

    >>> _quoted('sys.cpu'), _quoted('my"q')
    ('"sys.cpu"', '"my""q"')
    """
    return '"' + table.replace('"', '""') + '"'


def _message(error: Exception) -> str:
    return str(error).removeprefix("DataFusion error: ").strip()


@functools.cache
def _read_only() -> SQLOptions:
    """No CREATE, INSERT, COPY TO (which would write files) or SET: queries only read."""
    from datafusion import SQLOptions

    return SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)


class QueryEngine:
    """Runs SQL for the HTTP and Flight APIs.

    datafusion is imported on first use (it pulls in pandas, over a second): the server
    starts answering at once and imports it in the background (`Answers.warm_up`). The
    server runs queries only in forked processes (`localflux.influxdb.answers`), never in itself.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def session(self) -> SessionContext:
        """A fresh DataFusion session with Core's catalog and schema names (no thread pool
        starts until it plans or runs something)."""
        from datafusion import SessionConfig, SessionContext

        config = (
            SessionConfig()
            .with_default_catalog_and_schema("public", "iox")
            .with_information_schema(True)
            .with_target_partitions(2)
            # Few, large batches: less per-batch work in DataFusion and in the Flight stream.
            .with_batch_size(65536)
        )
        return SessionContext(config)

    def query(
        self, database: str, sql: str, params: Mapping[str, object] | None = None
    ) -> pa.Table:
        """Run one SQL statement; raises DatabaseNotFound or QueryError."""
        return self.run(database, sql, params)[0]

    def run(
        self, database: str, sql: str, params: Mapping[str, object] | None = None
    ) -> tuple[pa.Table, dict[str, Scan]]:
        """Run one SQL statement: its result and what it read of each table."""
        definitions = self.store.tables(database)
        ctx = self.session()
        for name, definition in definitions.items():
            schema = definition.schema()
            ctx.register_record_batches(_quoted(name), [[pa.RecordBatch.from_pylist([], schema)]])
        values = dict(params) if params else None
        try:
            scans = plan_scans(
                ctx.sql_with_options(
                    sql, _read_only(), param_values=values
                ).optimized_logical_plan()
            )
        except Exception as error:  # DataFusion raises plain exceptions for every SQL error
            raise QueryError(_message(error)) from None
        snapshot = self.store.snapshot(database, {name: (s.lo, s.hi) for name, s in scans.items()})
        for name, table in snapshot.items():
            ctx.deregister_table(_quoted(name))
            ctx.register_record_batches(_quoted(name), self._partitions(table, scans[name]))
        try:
            result = ctx.sql_with_options(sql, _read_only(), param_values=values).to_arrow_table()
        except Exception as error:
            raise QueryError(_message(error)) from None
        return unique_dictionaries(result), scans

    def warm_caches(self, database: str, scans: Mapping[str, Scan]) -> None:
        """Read what a query read, so the server's caches hold it (decoded Parquet files,
        deduplicated partitions): queries run in forked processes, whose own cache fills
        are lost when they exit. No DataFusion here; it must not run in the server."""
        try:
            snapshot = self.store.snapshot(
                database, {name: (s.lo, s.hi) for name, s in scans.items()}
            )
        except DatabaseNotFound:
            return
        for name, table in snapshot.items():
            scan = scans[name]
            for part in table.partitions:
                for _ in self.store.read(table, part, table.schema.names, scan.lo, scan.hi):
                    pass

    def _partitions(self, table: TableSnapshot, scan: Scan) -> list[list[pa.RecordBatch]]:
        """The table's rows as DataFusion partitions (two, for the two cores)."""
        schema = table.schema
        columns = (
            schema.names if scan.columns is None else [n for n in schema.names if n in scan.columns]
        )
        batches: list[pa.RecordBatch] = []
        for part in table.partitions:
            for piece in self.store.read(table, part, columns or [TIME], scan.lo, scan.hi):
                if piece.num_rows:
                    batches.extend(conform(piece, schema).to_batches())
        if not batches:
            return [[pa.RecordBatch.from_pylist([], schema)]]
        if len(batches) == 1:
            return [batches]
        return [batches[0::2], batches[1::2]]


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns; missing ones (older rows, unread columns) null."""
    rows = table.num_rows
    names = set(table.column_names)
    arrays = []
    for schema_field in schema:
        if schema_field.name in names:
            column = table.column(schema_field.name)
            arrays.append(
                column if column.type == schema_field.type else column.cast(schema_field.type)
            )
        elif schema_field.nullable:
            arrays.append(pa.nulls(rows, schema_field.type))
        else:  # `time`, when the query does not read it: any non-null value will do
            arrays.append(pa.array(np.zeros(rows, dtype=np.int64)).cast(schema_field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def unique_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary columns whose dictionaries hold each value once.

    DataFusion's parallel GROUP BY concatenates the partial results' dictionaries, repeating
    values; Arrow allows that, but pandas (the client's mode="pandas") refuses a categorical
    with repeated categories.
    """
    for position, schema_field in enumerate(table.schema):
        if not pa.types.is_dictionary(schema_field.type):
            continue
        column = table.column(position)
        chunks = [_unique_dictionary(chunk) for chunk in column.chunks]
        if any(new is not old for new, old in zip(chunks, column.chunks, strict=True)):
            table = table.set_column(
                position, schema_field, pa.chunked_array(chunks, schema_field.type)
            )
    return table


def _unique_dictionary(chunk: pa.DictionaryArray) -> pa.DictionaryArray:
    values = chunk.dictionary
    unique = pc.unique(values)
    if len(unique) == len(values):
        return chunk
    positions = pc.index_in(values, value_set=unique).cast(chunk.indices.type)
    return pa.DictionaryArray.from_arrays(positions.take(chunk.indices), unique)
