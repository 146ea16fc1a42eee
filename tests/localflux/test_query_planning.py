"""Which time range and columns a query needs, read from DataFusion's optimized plan."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest
from datafusion import SessionConfig, SessionContext

from localflux.influxdb.model import Kind, sorted_schema
from localflux.influxdb.query import plan_scans

MARGIN = 60 * 10**9
DAY_NS = 86400 * 10**9
JAN_1 = 1704067200 * 10**9  # 2024-01-01T00:00:00


@pytest.fixture
def ctx() -> SessionContext:
    ctx = SessionContext(SessionConfig().with_default_catalog_and_schema("public", "iox"))
    for name in ("m", "n"):
        schema = sorted_schema({"host": Kind.TAG, "v": Kind.FLOAT})
        ctx.register_record_batches(name, [[pa.RecordBatch.from_pylist([], schema)]])
    return ctx


def scans(ctx: SessionContext, sql: str, **params: object):
    return plan_scans(ctx.sql(sql, param_values=params or None).optimized_logical_plan())


def test_relative_time_range(ctx):
    before = time.time_ns()
    (scan,) = scans(ctx, "SELECT * FROM m WHERE time >= now() - interval '1 hour'").values()
    after = time.time_ns()
    assert before - 3600 * 10**9 - MARGIN <= scan.lo <= after - 3600 * 10**9 - MARGIN
    assert scan.hi is None
    assert scan.columns == {"host", "time", "v"}


def test_between_and_a_literal_on_the_left(ctx):
    scan = scans(ctx, "SELECT v FROM m WHERE time BETWEEN '2024-01-01' AND '2024-01-02'")["m"]
    assert (scan.lo, scan.hi) == (JAN_1 - MARGIN, JAN_1 + DAY_NS + MARGIN)
    assert scan.columns == {"time", "v"}
    scan = scans(ctx, "SELECT v FROM m WHERE '2024-01-01T00:00:00Z' < time")["m"]
    assert (scan.lo, scan.hi) == (JAN_1 - MARGIN, None)


def test_params_fold_into_the_range(ctx):
    scan = scans(ctx, "SELECT v FROM m WHERE time >= $since", since="2024-01-01T00:00:00Z")["m"]
    assert scan.lo == JAN_1 - MARGIN


def test_a_disjunction_reads_everything(ctx):
    scan = scans(ctx, "SELECT v FROM m WHERE time >= '2024-01-01' OR v > 1")["m"]
    assert (scan.lo, scan.hi) == (None, None)


def test_each_table_gets_its_own_range(ctx):
    result = scans(
        ctx,
        "SELECT m.v, n.v FROM m JOIN n ON m.host = n.host "
        "WHERE m.time >= '2024-01-01' AND n.time < '2024-01-02'",
    )
    assert (result["m"].lo, result["m"].hi) == (JAN_1 - MARGIN, None)
    assert (result["n"].lo, result["n"].hi) == (None, JAN_1 + DAY_NS + MARGIN)


def test_count_star_needs_no_columns(ctx):
    assert scans(ctx, "SELECT count(*) FROM m")["m"].columns == set()


def test_system_tables_are_not_user_tables(ctx):
    assert scans(ctx, "SELECT 1") == {}


def test_a_function_in_the_filter_keeps_the_time_range(ctx):
    """Functions the datafusion bindings cannot show as Python (md5, left) narrow nothing,
    and the time conjunct beside them still does (the pipeline's shard filter)."""
    scan = scans(
        ctx,
        "SELECT v FROM m WHERE time >= $since AND left(md5(btrim(host)), 8) >= $lo "
        "AND left(md5(btrim(host)), 8) < $hi",
        since="2024-01-01T00:00:00Z",
        lo="40000000",
        hi="80000000",
    )["m"]
    assert (scan.lo, scan.hi) == (JAN_1 - MARGIN, None)
