"""Soak: 8 writers and 4 queriers for 30 s while an attacker cycles through every attack.

Writers send 20 lines every 0.1 s, queriers a query every 0.25 s (HTTP and Flight).

Against a real `localflux serve` with CI-sized limits (64 connections, 2 s to send a
request, 3 s per query): zero 5xx for valid requests, p99 latency of valid requests at most
2 s, every acknowledged write present afterwards, every attack answered with a 4xx (or its
connection closed), and the server still serving with no query process left behind.

Valid clients do not retry: at the connection cap the front closes idle connections that
never sent a request first, so the attacker's idle sockets go before the clients' pooled ones.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import statistics
import threading
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import requests

from tests.localflux.rawhttp import connect, post_head
from tests.localflux.test_query_limits import query_children
from tests.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.localflux_only]

SECONDS = 30
WRITERS, QUERIERS, CAP = 8, 4, 64
# Each client sends at most one request per period (as telemetry does), not back to back.
WRITE_EVERY, QUERY_EVERY = 0.1, 0.25
BASE_NS = 1_700_000_000 * 10**9
DB = "machines"


class Record:
    """Outcomes of valid requests: (kind, status, seconds) and failures by reason."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: list[tuple[str, int, float]] = []
        self.failures: list[str] = []
        self.acknowledged: set[tuple[int, int]] = set()

    def add(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.results.append((kind, status, seconds))


def writer(url: str, number: int, stop: threading.Event, record: Record) -> None:
    http = requests.Session()
    seq = 0
    while not stop.wait(WRITE_EVERY):
        batch = range(seq, seq + 20)
        body = "".join(f"soak,writer=w{number} seq={i}i {BASE_NS + i}\n" for i in batch)
        v2 = seq % 40 == 0
        path = "/api/v2/write?bucket=machines&org=o" if v2 else "/api/v3/write_lp?db=machines"
        started = time.monotonic()
        try:
            response = http.post(url + path, data=body, timeout=30)
        except requests.RequestException as error:
            with record.lock:
                record.failures.append(f"write: {type(error).__name__}: {error}")
            continue
        record.add("write", response.status_code, time.monotonic() - started)
        if response.status_code == 204:
            with record.lock:
                record.acknowledged.update((number, i) for i in batch)
        seq += 20


def querier(server, number: int, stop: threading.Event, record: Record) -> None:
    http = requests.Session()
    client = server.client()
    while not stop.wait(QUERY_EVERY):
        started = time.monotonic()
        try:
            if number % 2:
                response = http.post(
                    server.url + "/api/v3/query_sql",
                    json={"db": DB, "q": "SELECT count(*) AS n FROM soak WHERE writer = $w",
                          "params": {"w": f"w{number}"}},
                    timeout=30,
                )  # fmt: skip
                status = response.status_code
            else:
                client.query("SELECT max(seq) AS top FROM soak", query_parameters={})
                status = 200
        except Exception as error:  # noqa: BLE001 - every failure of a valid query counts
            with record.lock:
                record.failures.append(f"query: {type(error).__name__}: {str(error)[:300]}")
            continue
        record.add("query", status, time.monotonic() - started)


def attacks(server) -> list[tuple[str, Callable[[], object]]]:
    """Each attack returns its status (or "closed" when the server closed the connection)."""
    url, port = server.url, server.port

    def post(path: str, **kwargs: object) -> int:
        return requests.post(url + path, timeout=30, **kwargs).status_code

    def raw(head: bytes, body: bytes = b"") -> int | str:
        with connect(port, timeout=30) as sock:
            sock.sendall(head + body)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return int(answer.split(b" ", 2)[1]) if answer else "closed"

    def idle_up_to_the_cap() -> str:
        socks = [connect(port) for _ in range(CAP)]
        time.sleep(1)
        for sock in socks:
            sock.close()
        return "closed"

    def slowloris() -> int | str:
        with connect(port, timeout=30) as sock:
            sock.sendall(b"POST /api/v3/write_lp?db=machines HTTP/1.1\r\n")
            try:
                for _ in range(10):
                    time.sleep(0.5)
                    sock.sendall(b"X-Slow: 1\r\n")
                return "open"
            except OSError:
                return "closed"

    def huge_chunk() -> int | str:
        head = post_head("/api/v3/write_lp?db=machines", {"Transfer-Encoding": "chunked"})
        return raw(head + b"40000000\r\n", b"x,t=a v=1 1\n" * 1_000_000)

    def flight_params() -> str:
        ticket = {"database": DB, "sql_query": "SELECT 1", "params": [1]}
        client = flight.FlightClient(f"grpc+tcp://127.0.0.1:{port}")
        try:
            client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()
        except pa.ArrowInvalid:
            return "invalid argument"
        return "accepted"

    wide = "wide," + ",".join(f"t{i}=v" for i in range(3000)) + f" f=1 {BASE_NS}"
    return [
        ("10,000-term expression", lambda: post("/api/v3/query_sql",
                                                json={"db": DB, "q": "SELECT " + "+".join(["1"] * 10_000)})),
        ("endless query", lambda: post("/api/v3/query_sql",
                                       json={"db": DB, "q": "SELECT count(*) FROM range(1000000000000)"})),
        ("idle connections up to the cap", idle_up_to_the_cap),
        ("slow request head", slowloris),
        ("1 GiB chunk", huge_chunk),
        ("Content-Length -1", lambda: raw(post_head("/api/v3/write_lp?db=x", {"Content-Length": "-1"}))),
        ("Content-Length abc", lambda: raw(post_head("/api/v3/write_lp?db=x", {"Content-Length": "abc"}))),
        ("gzip with garbage", lambda: post("/api/v3/write_lp?db=machines",
                                           data=gzip.compress(b"g v=1 1\n") + b"junk",
                                           headers={"Content-Encoding": "gzip"})),
        ("3,000 tags", lambda: post("/api/v3/write_lp?db=attack", data=wide)),
        ("timestamp out of range", lambda: post("/api/v3/write_lp?db=machines&precision=s",
                                                data="t,x=1 v=1 9223372036854775807")),
        ("float out of range", lambda: post("/api/v3/write_lp?db=machines", data="t,x=1 v=1e400 1")),
        ("page on another origin", lambda: post("/api/v3/write_lp?db=machines", data="t v=1 1",
                                                headers={"Origin": "http://evil.example"})),
        ("foreign Host", lambda: requests.get(url + "/health", headers={"Host": "evil.example"},
                                              timeout=30).status_code),
        ("5M-row JSON", lambda: post("/api/v3/query_sql",
                                     json={"db": DB, "q": "SELECT value FROM range(5000000)"})),
        ("deeply nested JSON", lambda: post("/api/v3/query_sql", data=b"[" * 50_000 + b"]" * 50_000)),
        ("Flight params not an object", flight_params),
    ]  # fmt: skip


def test_soak(localflux_factory):
    server = localflux_factory(
        extra_args=["--max-connections", str(CAP), "--idle-timeout", "2",
                    "--query-timeout", "3", "--max-answer-mb", "1"]
    )  # fmt: skip
    assert requests.post(server.url + "/api/v3/write_lp?db=machines", data="soak,writer=w0 seq=-1i 1",
                         timeout=30).status_code == 204  # fmt: skip
    record = Record()
    stop = threading.Event()
    threads = [
        threading.Thread(target=writer, args=(server.url, n, stop, record)) for n in range(WRITERS)
    ] + [threading.Thread(target=querier, args=(server, n, stop, record)) for n in range(QUERIERS)]
    for thread in threads:
        thread.start()
    outcomes: dict[str, set[object]] = {}
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            for name, attack in attacks(server):
                try:
                    result: object = attack()
                except (requests.RequestException, OSError) as error:
                    result = f"connection: {type(error).__name__}"
                outcomes.setdefault(name, set()).add(result)
                if time.monotonic() >= deadline:
                    break
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert server.process.alive()
    assert not record.failures, record.failures[:10]
    statuses = [status for _, status, _ in record.results]
    assert not [s for s in statuses if s >= 500], "5xx for valid requests"
    assert set(statuses) <= {200, 204}, sorted(set(statuses))
    latencies = sorted(seconds for _, _, seconds in record.results)
    p99 = latencies[int(len(latencies) * 0.99)]
    for kind in ("write", "query"):
        mine = sorted(seconds for k, _, seconds in record.results if k == kind)
        print(
            f"soak {kind}s: {len(mine)}, median {statistics.median(mine) * 1000:.0f} ms, "
            f"p99 {mine[int(len(mine) * 0.99)] * 1000:.0f} ms"
        )
    print(
        f"soak: {len(latencies)} valid requests, p99 {p99 * 1000:.0f} ms, "
        f"{len(record.acknowledged)} acknowledged lines; attacks: {outcomes}"
    )
    assert p99 <= 2.0, f"p99 latency {p99:.2f} s"
    stored = server.client().query("SELECT writer, seq FROM soak WHERE seq >= 0")
    present = {
        (int(w[1:]), s)
        for w, s in zip(
            stored.column("writer").to_pylist(), stored.column("seq").to_pylist(), strict=True
        )
    }
    assert record.acknowledged <= present, f"{len(record.acknowledged - present)} writes lost"
    for name, results in outcomes.items():
        for result in results:
            assert not (isinstance(result, int) and result >= 500), (name, results)
            assert result not in ("open", "accepted", 200, 204) or name == "3,000 tags", (
                name,
                results,
            )
    assert wait_until(lambda: not query_children(server), timeout=10)
