"""Does `machine_data` already hold readings? Asked before publishing a backfill.

The backfill is a made-up healthy history ending now. On an empty database it gives the
detector its first window; on a database that already holds readings it would write a second,
different history over the machines' real recent past. So, unless told otherwise
(`SIM_BACKFILL_IF_EMPTY=0`), the simulator asks InfluxDB first, over the HTTP query API
(`POST /api/v3/query_sql`, the SQL fixed, the table name a bound parameter):

* no database yet (HTTP 404) or no `machine_data` table in it: empty, publish the backfill;
* at least one row: not empty, skip the backfill;
* InfluxDB not answering yet (refused connection, timeout, HTTP 5xx): ask again every second
  until `timeout`, as InfluxDB may still be starting (the Docker stack and `make run` start the
  simulator beside it);
* anything else (a refused token, a bad database name): `HistoryCheckError`, which says what to
  fix; the simulator stops rather than guess, since a wrong guess either loses the backfill or
  writes a second history.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

log = logging.getLogger("machine_simulator.history_check")

TABLE = "machine_data"
TABLE_SQL = (
    "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = 'iox' AND table_name = $table"
)
ROWS_SQL = f'SELECT 1 AS found FROM "{TABLE}" LIMIT 1'


class HistoryCheckError(RuntimeError):
    """InfluxDB could not tell whether `machine_data` holds rows; the message says why."""


class _NotReady(Exception):
    """InfluxDB did not answer (yet): worth asking again."""


def machine_data_has_rows(
    host: str,
    database: str,
    token: str = "",
    *,
    timeout: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """True when `database` has a `machine_data` table with at least one row."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not _query(host, database, token, TABLE_SQL, {"table": TABLE}):
                return False  # no database (None) or no table ([]) yet
            return bool(_query(host, database, token, ROWS_SQL, None))
        except _NotReady as reason:
            if time.monotonic() >= deadline:
                raise HistoryCheckError(
                    f"InfluxDB at {host} did not answer within {timeout:g} s ({reason}), so it "
                    f"is unknown whether {TABLE} already holds readings"
                ) from None
            log.info("waiting for InfluxDB at %s (%s)", host, reason)
            sleep(1.0)


def _query(
    host: str, database: str, token: str, sql: str, params: Mapping[str, object] | None
) -> list[dict] | None:
    """The rows of one query; None when the database does not exist (HTTP 404)."""
    body: dict[str, object] = {"db": database, "q": sql, "format": "json"}
    if params:
        body["params"] = dict(params)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        host.rstrip("/") + "/api/v3/query_sql",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            rows = json.loads(response.read() or b"[]")
    except urllib.error.HTTPError as error:
        detail = error.read()[:300].decode(errors="replace").strip()
        if error.code == 404:
            return None
        if error.code >= 500:
            raise _NotReady(f"HTTP {error.code}") from None
        if error.code in (401, 403):
            raise HistoryCheckError(
                f"InfluxDB at {host} refused the token (HTTP {error.code}): check INFLUX_TOKEN"
            ) from None
        raise HistoryCheckError(
            f"InfluxDB at {host} refused the query on database {database!r} "
            f"(HTTP {error.code}: {detail})"
        ) from None
    except (OSError, ValueError) as error:  # refused, reset, timed out, half an answer
        raise _NotReady(str(error)) from None
    if not isinstance(rows, list):
        raise HistoryCheckError(f"InfluxDB at {host} answered with {type(rows).__name__}")
    return rows
