"""The HTTP and Flight API around writes and queries: auth, limits, encodings, errors, formats."""

from __future__ import annotations

import base64
import gzip
import io
import json

import pyarrow.parquet as pq
import pytest
import requests
from influxdb_client_3.exceptions import InfluxDB3ClientQueryError

from tests.localflux.helpers import TIMEOUT, query_sql, rows, write_lp

LINES = "m,host=a usage=1.5,n=1i 1700000000000000000\nm,host=b usage=2.5 1700000001000000000\n"


def test_health_and_ping(localflux_server):
    health = requests.get(
        localflux_server.url + "/health", headers=localflux_server.headers(), timeout=TIMEOUT
    )
    assert (health.status_code, health.text) == (200, "OK")
    for method in (requests.get, requests.post):
        ping = method(
            localflux_server.url + "/ping", headers=localflux_server.headers(), timeout=TIMEOUT
        )
        assert ping.status_code == 200
        assert ping.headers["X-Influxdb-Version"] == ping.json()["version"]
    assert localflux_server.client().get_server_version()


def test_gzip_bodies_are_accepted(localflux_server):
    response = write_lp(
        localflux_server, gzip.compress(LINES.encode()), headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 204
    assert len(rows(localflux_server, "SELECT * FROM m")) == 2


def test_no_sync_writes_are_acknowledged_and_visible(localflux_server):
    assert write_lp(localflux_server, LINES, no_sync="true").status_code == 204
    assert len(rows(localflux_server, "SELECT * FROM m")) == 2
    assert write_lp(localflux_server, LINES, no_sync="maybe").status_code == 400


def test_chunked_bodies_are_accepted(localflux_server):
    def pieces():
        for line in LINES.splitlines(keepends=True):
            yield line.encode()

    response = requests.post(
        localflux_server.url + "/api/v3/write_lp",
        params={"db": localflux_server.database},
        data=pieces(),  # a generator: requests sends Transfer-Encoding: chunked
        headers=localflux_server.headers(),
        timeout=TIMEOUT,
    )
    assert response.status_code == 204
    assert len(rows(localflux_server, "SELECT * FROM m")) == 2


def test_unknown_content_encoding_is_refused(localflux_server):
    response = write_lp(localflux_server, LINES, headers={"Content-Encoding": "br"})
    assert response.status_code == 400


def test_bodies_over_10_mib_are_refused_with_413(localflux_server):
    line = "m,host=a usage=1.5 1700000000000000000\n"
    big = line * (10 * 1024 * 1024 // len(line) + 1)
    assert len(big) > 10 * 1024 * 1024
    assert write_lp(localflux_server, big).status_code == 413
    # The limit applies after decompression: a small gzip body can still be too large.
    bomb = gzip.compress(big.encode())
    assert len(bomb) < 10 * 1024 * 1024
    assert write_lp(localflux_server, bomb, headers={"Content-Encoding": "gzip"}).status_code == 413
    assert write_lp(localflux_server, big, api="v2").status_code == 413
    # Nothing was written, and the connection still works for the next request.
    assert query_sql(localflux_server, "SELECT * FROM m").status_code in (400, 404)
    assert write_lp(localflux_server, LINES).status_code == 204


def test_unknown_database(localflux_server):
    response = query_sql(localflux_server, "SELECT 1", db="no_such_db")
    assert response.status_code == 404
    assert "no_such_db" in response.json()["error"]
    client = localflux_server.client(database="no_such_db")
    with pytest.raises(InfluxDB3ClientQueryError, match="no_such_db"):
        client.query("SELECT 1")


def test_bad_sql(localflux_server):
    assert write_lp(localflux_server, LINES).status_code == 204
    for sql in ["SELEC 1", "SELECT nope FROM m", "SELECT * FROM missing_table"]:
        response = query_sql(localflux_server, sql)
        assert response.status_code == 400, sql
        assert response.text and "Traceback" not in response.text, sql
        with pytest.raises(InfluxDB3ClientQueryError) as caught:
            localflux_server.client().query(sql)
        assert "Traceback" not in str(caught.value) and 'File "' not in str(caught.value)


def test_query_formats(localflux_server):
    assert write_lp(localflux_server, LINES).status_code == 204
    sql = "SELECT host, n, time, usage FROM m ORDER BY time"
    expected = [
        {"host": "a", "n": 1, "time": "2023-11-14T22:13:20", "usage": 1.5},
        {"host": "b", "time": "2023-11-14T22:13:21", "usage": 2.5},
    ]
    assert query_sql(localflux_server, sql).json() == expected
    jsonl = query_sql(localflux_server, sql, fmt="jsonl").text
    assert [json.loads(line) for line in jsonl.splitlines()] == expected
    csv = query_sql(localflux_server, sql, fmt="csv").text.splitlines()
    assert csv[0] == "host,n,time,usage"
    assert csv[1:] == ["a,1,2023-11-14T22:13:20,1.5", "b,,2023-11-14T22:13:21,2.5"]
    pretty = query_sql(localflux_server, sql, fmt="pretty").text
    assert "| host | n | time                | usage |" in pretty
    parquet = query_sql(localflux_server, sql, fmt="parquet")
    assert parquet.headers["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.column("usage").to_pylist() == [1.5, 2.5]
    # GET with query-string parameters, and the format from the Accept header.
    response = requests.get(
        localflux_server.url + "/api/v3/query_sql",
        params={"db": localflux_server.database, "q": sql},
        headers={**localflux_server.headers(), "Accept": "text/csv"},
        timeout=TIMEOUT,
    )
    assert response.text.splitlines() == csv


def test_sql_params_over_http_and_flight(localflux_server):
    assert write_lp(localflux_server, LINES).status_code == 204
    sql = "SELECT usage FROM m WHERE host = $host AND usage > $min"
    response = query_sql(localflux_server, sql, params={"host": "b", "min": 2})
    assert response.json() == [{"usage": 2.5}]
    response = requests.get(
        localflux_server.url + "/api/v3/query_sql",
        params={
            "db": localflux_server.database,
            "q": sql,
            "params": json.dumps({"host": "a", "min": 0}),
        },
        headers=localflux_server.headers(),
        timeout=TIMEOUT,
    )
    assert response.json() == [{"usage": 1.5}]
    table = localflux_server.client().query(sql, query_parameters={"host": "b", "min": 2})
    assert table.column("usage").to_pylist() == [2.5]


def test_configure_database(localflux_server):
    url = localflux_server.url + "/api/v3/configure/database"
    headers = localflux_server.headers()
    name = localflux_server.database + "_made"
    created = requests.post(url, json={"db": name}, headers=headers, timeout=TIMEOUT)
    assert created.status_code == 200
    again = requests.post(url, json={"db": name}, headers=headers, timeout=TIMEOUT)
    assert again.status_code == 409
    listed = requests.get(url, params={"format": "json"}, headers=headers, timeout=TIMEOUT)
    assert {"iox::database": name} in listed.json()
    bad = requests.post(url, json={"db": "_bad"}, headers=headers, timeout=TIMEOUT)
    assert bad.status_code == 400
    deleted = requests.delete(url, params={"db": name}, headers=headers, timeout=TIMEOUT)
    assert deleted.status_code == 200
    listed = requests.get(url, params={"format": "json"}, headers=headers, timeout=TIMEOUT)
    assert {"iox::database": name} not in listed.json()


@pytest.mark.localflux_only
def test_configure_database_needs_json(localflux_server):
    response = requests.post(
        localflux_server.url + "/api/v3/configure/database",
        data=b'{"db": "x"}',
        headers={"Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 415


@pytest.mark.localflux_only
def test_influxql_is_refused_clearly(localflux_server):
    response = requests.get(
        localflux_server.url + "/api/v3/query_influxql",
        params={"db": localflux_server.database, "q": "SELECT * FROM m"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 501
    assert "not supported" in response.text
    with pytest.raises(InfluxDB3ClientQueryError, match="not supported"):
        localflux_server.client().query("SELECT * FROM m", language="influxql")


@pytest.mark.localflux_only
def test_auth_off_ignores_tokens(localflux_server):
    response = write_lp(localflux_server, LINES, headers={"Authorization": "Token whatever"})
    assert response.status_code == 204


def test_auth_on(localflux_factory):
    server = localflux_factory(token="s3cret")
    url = server.url
    # Missing or wrong token: 401, also for health and ping.
    for path in ("/health", "/ping"):
        assert requests.get(url + path, timeout=TIMEOUT).status_code == 401
    for header in ("Bearer wrong", "Token wrong"):
        response = write_lp(server, LINES, headers={"Authorization": header})
        assert response.status_code == 401, header
    assert write_lp(server, LINES, headers={"Authorization": "Digest s3cret"}).status_code == 400
    # Every accepted scheme.
    basic = "Basic " + base64.b64encode(b"any-user:s3cret").decode()
    for header in ("Bearer s3cret", "Token s3cret", basic):
        response = write_lp(server, LINES, headers={"Authorization": header})
        assert response.status_code == 204, header
    # v1 also takes the token as the password parameter.
    response = requests.post(
        url + "/write", params={"db": server.database, "p": "s3cret"}, data=LINES, timeout=TIMEOUT
    )
    assert response.status_code == 204
    # The unmodified client: HTTP writes and Flight queries.
    client = server.client()
    assert client.query("SELECT count(*) AS n FROM m").column("n").to_pylist() == [2]
    wrong = server.client(token="wrong")
    with pytest.raises(InfluxDB3ClientQueryError, match="(?i)unauthenticated"):
        wrong.query("SELECT 1")


def test_chunked_bodies_over_the_limit_are_refused(localflux_server):
    line = b"m,host=a usage=1.5 1700000000000000000\n"
    chunk = line * (1024 * 1024 // len(line))

    def pieces():
        for _ in range(11):
            yield chunk

    response = requests.post(
        localflux_server.url + "/api/v3/write_lp",
        params={"db": localflux_server.database},
        data=pieces(),
        headers=localflux_server.headers(),
        timeout=TIMEOUT,
    )
    assert response.status_code == 413
    assert query_sql(localflux_server, "SELECT * FROM m").status_code in (400, 404)


@pytest.mark.localflux_only
def test_no_cors_headers_without_an_allow_list(localflux_server):
    response = requests.options(localflux_server.url + "/api/v3/query_sql", timeout=TIMEOUT)
    assert response.status_code == 204
    assert "Access-Control-Allow-Origin" not in response.headers
    health = requests.get(localflux_server.url + "/health", timeout=TIMEOUT)
    assert "Access-Control-Allow-Origin" not in health.headers
