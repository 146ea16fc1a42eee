"""Requests that used to crash, starve or fool localflux, each against a real `localflux serve`:
bodies whose size limits were checked too late, gzip bodies cut short, lengths that are no
numbers, idle sockets holding every file descriptor, and web pages."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path

import pytest
import requests

from tests.localflux.helpers import TIMEOUT, rows, write_lp
from tests.localflux.rawhttp import (
    closed_by_server,
    connect,
    many_idle,
    post_head,
    read_response,
    request,
)
from tests.support import PYTHON, wait_until

pytestmark = pytest.mark.localflux_only

LINE = b"m,host=a v=1i 1700000000000000000\n"
WRITE = "/api/v3/write_lp?db=machines"


def peak_rss_mb(server) -> float:
    status = Path(f"/proc/{server.process.popen.pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


# --- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "12, 13"])
def test_an_invalid_content_length_is_a_400(localflux_server, length):
    """`-1` used to read until the connection closed; `abc` closed it without an answer."""
    response = request(localflux_server.port, post_head(WRITE, {"Content-Length": length}))
    assert response.status == 400
    assert "Content-Length" in response.text
    assert write_lp(localflux_server, LINE).status_code == 204


def test_a_chunk_declaring_a_gibibyte_is_refused_without_buffering_it(localflux_server):
    """The chunk used to be read into memory whole before any size check. The peak is taken
    after a first write and query, which load the write and query paths (~65 MB of modules)."""
    assert write_lp(localflux_server, b"warmup v=1i 1\n").status_code == 204
    query_count(localflux_server)
    before = peak_rss_mb(localflux_server)
    with connect(localflux_server.port) as sock:
        sock.sendall(post_head(WRITE, {"Transfer-Encoding": "chunked"}) + b"40000000\r\n")
        piece = LINE * ((1 << 20) // len(LINE))
        for _ in range(100):  # 100 MiB of the declared 1 GiB, then the client stops
            sock.sendall(piece)
        sock.shutdown(socket.SHUT_WR)
        response = read_response(sock)
    assert response.status == 413
    assert peak_rss_mb(localflux_server) - before < 40
    assert query_count(localflux_server) == 0  # nothing of the refused body was written


def query_count(server) -> int:
    response = requests.post(
        server.url + "/api/v3/query_sql",
        json={"db": server.database, "q": "SELECT count(*) AS n FROM m"},
        timeout=TIMEOUT,
    )
    return response.json()[0]["n"] if response.status_code == 200 else 0


def test_every_gzip_member_is_written(localflux_server):
    """`cat a.gz b.gz`: the second member used to be dropped, with a 204."""
    body = gzip.compress(b"m,host=a v=1i 1\n") + gzip.compress(b"m,host=b v=2i 2\n")
    response = write_lp(localflux_server, body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 204
    assert rows(localflux_server, "SELECT host, v FROM m ORDER BY v") == [
        {"host": "a", "v": 1},
        {"host": "b", "v": 2},
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (gzip.compress(LINE) + b"garbage", "data after gzip member 1 is not gzip"),
        (gzip.compress(LINE)[:-8], "no gzip trailer"),
        (gzip.compress(LINE) + b"\n", "no gzip trailer"),
        (b"not gzip at all", "error decoding gzip stream"),
    ],
)
def test_gzip_with_trailing_garbage_or_no_trailer_is_refused(localflux_server, body, message):
    for api in ("v3", "v2"):
        response = write_lp(localflux_server, body, api=api, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 400, api
        assert message in response.text
    assert query_count(localflux_server) == 0


def test_a_body_that_stops_arriving_is_a_408(localflux_factory):
    server = localflux_factory(extra_args=["--idle-timeout", "1"])
    with connect(server.port) as sock:
        sock.sendall(post_head(WRITE, {"Content-Length": "100"}) + LINE)
        response = read_response(sock)
    assert response.status == 408
    assert write_lp(server, LINE).status_code == 204


# --- connections -----------------------------------------------------------------------------


def test_running_out_of_file_descriptors_is_survived(localflux_factory):
    """About 1,020 idle connections used to make accept fail, and the server exit. Here the
    server may hold 128 files, and 250 connections arrive."""
    limit = (
        "import os, resource, sys; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128)); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    server = localflux_factory(prefix=[PYTHON, "-c", limit], extra_args=["--idle-timeout", "2"])
    with many_idle(server.port, 250):
        assert wait_until(lambda: "accept failed" in server.process.log(), timeout=10)
        assert server.process.alive()
    # The idle ones time out and the server serves again.
    assert wait_until(lambda: _health(server), timeout=20)
    assert write_lp(server, LINE).status_code == 204
    assert server.process.alive()


def _health(server) -> bool:
    try:
        return requests.get(server.url + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_idle_connections_cannot_hold_the_cap(localflux_factory):
    """At the cap, the connection idle the longest makes room for the new one."""
    server = localflux_factory(extra_args=["--max-connections", "10", "--idle-timeout", "60"])
    with many_idle(server.port, 30) as idle:
        assert write_lp(server, LINE).status_code == 204
        closed = [sock for sock in idle[:15] if closed_by_server(sock, wait=0.5)]
        assert len(closed) >= 15
        assert not closed_by_server(idle[-1], wait=0.5)
    assert rows(server, "SELECT v FROM m") == [{"v": 1}]


def test_a_connection_without_a_complete_request_is_closed(localflux_factory):
    server = localflux_factory(extra_args=["--idle-timeout", "1"])
    with connect(server.port) as silent, connect(server.port) as slow:
        slow.sendall(b"POST /api/v3/write_lp HTTP/1.1\r\n")
        for _ in range(20):  # a header line every 0.3 s, never a complete head: closed anyway
            if closed_by_server(slow, wait=0.3):
                break
            slow.sendall(b"X-Slow: 1\r\n")
        else:
            pytest.fail("a head trickling in line by line kept its connection for 6 s")
        assert closed_by_server(silent, wait=3)
    # A keep-alive connection is closed once idle too long, not before its answer.
    with connect(server.port) as sock:
        sock.sendall(post_head(WRITE, {"Content-Length": str(len(LINE))}) + LINE)
        assert read_response(sock).status == 204
        assert closed_by_server(sock, wait=3)


# --- browsers --------------------------------------------------------------------------------


def test_a_foreign_host_name_is_refused(localflux_server):
    """DNS rebinding: a page on evil.example re-pointed to 127.0.0.1 sends its own name."""
    for host in (f"evil.example:{localflux_server.port}", "evil.example"):
        response = requests.get(localflux_server.url + "/health", headers={"Host": host})
        assert response.status_code == 403
        assert "not a loopback name" in response.text
    for host in (
        f"localhost:{localflux_server.port}",
        "127.0.0.1",
        f"[::1]:{localflux_server.port}",
    ):
        response = requests.get(localflux_server.url + "/health", headers={"Host": host})
        assert response.status_code == 200, host


def test_requests_from_web_pages_are_refused_without_an_allow_list(localflux_server):
    evil = {"Origin": "http://evil.example"}
    write = write_lp(localflux_server, LINE, headers=evil)  # a "simple" request: no preflight
    assert write.status_code == 403
    assert "LOCALFLUX_CORS_ORIGINS" in write.text
    assert "Access-Control-Allow-Origin" not in write.headers
    preflight = requests.options(
        localflux_server.url + "/api/v3/configure/database",
        headers={**evil, "Access-Control-Request-Method": "DELETE"},
        timeout=TIMEOUT,
    )
    assert preflight.status_code == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert query_count(localflux_server) == 0


def test_allowed_origins_get_cors_headers_and_others_do_not(localflux_factory):
    server = localflux_factory(extra_args=["--cors-origins", "http://localhost:3000"])
    allowed = {"Origin": "http://localhost:3000"}
    preflight = requests.options(
        server.url + "/api/v3/query_sql",
        headers={**allowed, "Access-Control-Request-Method": "POST"},
        timeout=TIMEOUT,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    write = write_lp(server, LINE, headers=allowed)
    assert write.status_code == 204
    assert write.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert write_lp(server, LINE, headers={"Origin": "http://evil.example"}).status_code == 403
