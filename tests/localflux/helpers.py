"""Plain-HTTP helpers for localflux tests (they work against a real InfluxDB 3 too)."""

from __future__ import annotations

import requests

from tests.fixtures.localflux import LocalfluxServer

TIMEOUT = 30


def write_lp(
    server: LocalfluxServer,
    body: str | bytes,
    *,
    api: str = "v3",
    db: str | None = None,
    headers: dict[str, str] | None = None,
    **params: str,
) -> requests.Response:
    """POST line protocol to the v3, v2 or v1 write endpoint."""
    database = db or server.database
    path, db_param = {
        "v3": ("/api/v3/write_lp", "db"),
        "v2": ("/api/v2/write", "bucket"),
        "v1": ("/write", "db"),
    }[api]
    query = {db_param: database, **params}
    if api == "v2":
        query.setdefault("org", "default")
    data = body.encode() if isinstance(body, str) else body
    return requests.post(
        server.url + path,
        params=query,
        data=data,
        headers={
            **server.headers(),
            "Content-Type": "text/plain; charset=utf-8",
            **(headers or {}),
        },
        timeout=TIMEOUT,
    )


def query_sql(
    server: LocalfluxServer,
    sql: str,
    *,
    db: str | None = None,
    fmt: str = "json",
    params: dict[str, object] | None = None,
) -> requests.Response:
    payload: dict[str, object] = {"db": db or server.database, "q": sql, "format": fmt}
    if params:
        payload["params"] = params
    return requests.post(
        server.url + "/api/v3/query_sql", json=payload, headers=server.headers(), timeout=TIMEOUT
    )


def rows(server: LocalfluxServer, sql: str, *, db: str | None = None) -> list[dict[str, object]]:
    """Rows of a SQL query as JSON objects (nulls omitted, as Core writes them)."""
    response = query_sql(server, sql, db=db)
    assert response.status_code == 200, response.text
    return response.json()
