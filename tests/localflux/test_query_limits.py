"""Queries that used to crash or starve localflux: each against a real `localflux serve`.

A query runs in a process of its own, so it can be stopped: at the time limit, when its
client goes away, or when it crashes; and expressions too long to plan are refused first.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests
from influxdb_client_3.exceptions import InfluxDB3ClientQueryError

from tests.localflux.helpers import query_sql, rows, write_lp
from tests.support import wait_until

pytestmark = pytest.mark.localflux_only

FOREVER = "SELECT count(*) AS n FROM range(1000000000000)"


def query_children(server) -> list[int]:
    """Processes the server forked for queries (still running or not yet reaped)."""
    parent = server.process.popen.pid
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command may hold spaces and parentheses: the fields follow the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def still_serving(server) -> None:
    assert write_lp(server, "alive,host=a v=1i 1700000000000000000").status_code == 204
    assert rows(server, "SELECT v FROM alive") == [{"v": 1}]


def raw_ticket(server, ticket: dict[str, object]) -> pa.Table:
    client = flight.FlightClient(f"grpc+tcp://127.0.0.1:{server.port}")
    return client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()


def test_a_10000_term_expression_is_refused_before_planning(localflux_server):
    """It used to end in a SIGSEGV inside DataFusion's planner, over HTTP and Flight."""
    write_lp(localflux_server, "m,host=a v=0i 1")
    huge = "SELECT " + "+".join(["1"] * 10_000)
    response = query_sql(localflux_server, huge)
    assert response.status_code == 400
    assert "query too complex: 9999 operators" in response.text
    with pytest.raises(InfluxDB3ClientQueryError, match="query too complex"):
        localflux_server.client().query(huge)
    # Long, but within the bound: planned and answered.
    assert rows(localflux_server, "SELECT " + "+".join(["1"] * 300) + " AS n") == [{"n": 300}]
    still_serving(localflux_server)


def test_a_query_over_the_time_limit_is_stopped_with_a_clear_error(localflux_factory):
    server = localflux_factory(extra_args=["--query-timeout", "2"])
    write_lp(server, "m,host=a v=0i 1")
    started = time.monotonic()
    response = query_sql(server, FOREVER)
    assert response.status_code == 400
    assert "query stopped: it ran longer than 2 s (LOCALFLUX_QUERY_TIMEOUT)" in response.text
    with pytest.raises(InfluxDB3ClientQueryError, match="query stopped: it ran longer than 2 s"):
        server.client().query(FOREVER)
    assert time.monotonic() - started < 20
    assert wait_until(lambda: not query_children(server), timeout=10)
    still_serving(server)


def test_a_query_stops_when_its_client_goes_away(localflux_server):
    """Nothing keeps burning CPU for a client that left (the default limit is 60 s)."""
    write_lp(localflux_server, "m,host=a v=0i 1")
    body = json.dumps({"db": localflux_server.database, "q": FOREVER}).encode()
    with socket.create_connection(("127.0.0.1", localflux_server.port)) as conn:
        conn.sendall(
            b"POST /api/v3/query_sql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert wait_until(lambda: query_children(localflux_server), timeout=10)
    assert wait_until(lambda: not query_children(localflux_server), timeout=10)
    # The same over Flight: the client's deadline cancels the call.
    with pytest.raises(InfluxDB3ClientQueryError):
        localflux_server.client().query(FOREVER, timeout=1)
    assert wait_until(lambda: not query_children(localflux_server), timeout=10)
    still_serving(localflux_server)


def test_a_crashed_query_process_is_an_error_and_the_server_lives(localflux_server):
    """A native crash (here a real SIGSEGV sent to the query's process) ends the query with
    an error; the server keeps serving."""
    write_lp(localflux_server, "m,host=a v=0i 1")

    def crash_the_query() -> None:
        assert wait_until(lambda: query_children(localflux_server), timeout=10)
        for pid in query_children(localflux_server):
            os.kill(pid, signal.SIGSEGV)

    killer = threading.Thread(target=crash_the_query)
    killer.start()
    response = query_sql(localflux_server, FOREVER)
    killer.join()
    assert response.status_code == 500
    assert "ended by SIGSEGV" in response.text
    still_serving(localflux_server)


def test_materialised_answers_are_capped_and_parquet_and_flight_are_not(localflux_factory):
    server = localflux_factory(extra_args=["--max-answer-mb", "1"])
    write_lp(server, "m,host=a v=0i 1")
    many = "SELECT value FROM range(200000)"
    for fmt in ("json", "jsonl", "csv", "pretty"):
        response = query_sql(server, many, fmt=fmt)
        assert response.status_code == 400, fmt
        assert "the answer is larger than 1048576 bytes (LOCALFLUX_MAX_ANSWER_MB)" in response.text
    parquet = query_sql(server, many, fmt="parquet")
    assert parquet.status_code == 200
    assert len(parquet.content) > 0
    assert server.client().query(many).num_rows == 200_000
    small = query_sql(server, "SELECT value FROM range(3)", fmt="csv")
    assert small.text == "value\n0\n1\n2\n"


def test_flight_params_that_are_not_an_object_are_an_invalid_argument(localflux_server):
    write_lp(localflux_server, "m,host=a v=0i 1")
    ticket = {"database": localflux_server.database, "sql_query": "SELECT 1", "params": [1, 2]}
    with pytest.raises(pa.ArrowInvalid, match="params must be a JSON object") as raised:
        raw_ticket(localflux_server, ticket)
    assert "Traceback" not in str(raised.value)


def test_json_nested_too_deeply_is_a_400(localflux_server):
    """It used to be a 500 (a RecursionError in the JSON parser)."""
    response = requests.post(
        localflux_server.url + "/api/v3/query_sql",
        data=b"[" * 100_000 + b"]" * 100_000,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.text


def test_flight_answers_whose_batches_have_different_tag_dictionaries(localflux_server):
    """Each write is its own batch with its own tag dictionary; the answer crosses from the
    query's process to the server as an Arrow stream, which allows that (a file does not)."""
    for host in ("a", "b", "c"):
        assert write_lp(localflux_server, f"m,host={host} v=1i 1700000000000000000").status_code
    table = localflux_server.client().query("SELECT host FROM m")
    assert sorted(table.column("host").to_pylist()) == ["a", "b", "c"]
