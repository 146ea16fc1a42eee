"""InfluxDB 3 Core's HTTP API: writes (v3, v2, v1), SQL queries, health, ping, databases.

Status codes and error bodies follow Core, because clients branch on them: the v3 write API
answers a partial write with the list of rejected lines, v2 clients (Telegraf) read
`{"code", "message"}`, v1 clients read `{"error"}`. Bodies are limited to 10 MiB after
gzip decompression (413), as Core's default `--max-http-request-size`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import time
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa

from localflux import __version__
from localflux.influxdb import formats, lineprotocol
from localflux.influxdb.auth import MalformedAuthorization, token_from_header, token_matches
from localflux.influxdb.query import QueryEngine, QueryError
from localflux.influxdb.storage import DatabaseExists, DatabaseNotFound, Store, WriteRejected

log = logging.getLogger(__name__)

VERSION = f"3.11.0+localflux.{__version__}"
MAX_REQUEST_BYTES = 10 * 1024 * 1024
# Bodies over the limit are still read (up to this) so the client sees the 413, not a reset.
_DRAIN_LIMIT = 256 * 1024 * 1024
_IDLE_TIMEOUT = 300.0
_DB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_DB_NAME_WITH_RP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:/[A-Za-z0-9_-]+)?\Z")


def database_name_error(name: str, allow_rp: bool = False) -> str | None:
    """Core's validation of database names; None when the name is fine.

    >>> database_name_error("machines"), database_name_error("_x")
    (None, 'db name did not start with a number or letter')
    >>> database_name_error("a.b")
    'invalid character in database name: must be ASCII, containing only letters, numbers, underscores, or hyphens'
    """
    if not name:
        return "db name cannot be empty"
    invalid_char = (
        "invalid character in database name: must be ASCII, containing only letters, "
        "numbers, underscores, or hyphens"
    )
    if not name[0].isascii():
        return invalid_char
    if not name[0].isalnum():
        return "db name did not start with a number or letter"
    if (_DB_NAME_WITH_RP if allow_rp else _DB_NAME).match(name):
        return None
    if allow_rp and (name.count("/") > 1 or name.endswith("/")):
        return (
            "db name with invalid retention policy, if providing a retention policy name, "
            "must be of form '<db_name>/<rp_name>'"
        )
    return invalid_char


class HttpError(Exception):
    def __init__(self, status: int, body: bytes | str, content_type: str = "text/plain") -> None:
        super().__init__(status)
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = content_type


def _json_error(status: int, payload: object) -> HttpError:
    return HttpError(status, json.dumps(payload, separators=(",", ":")), "application/json")


@dataclass
class Api:
    """What the handlers share: the store, the query engine and the server's settings."""

    store: Store
    engine: QueryEngine
    token: str | None
    max_request_bytes: int = MAX_REQUEST_BYTES
    process_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def serve(self, conn: socket.socket, address: tuple[str, int]) -> None:
        """Serve HTTP/1.1 requests on an accepted connection until it closes."""
        with contextlib.suppress(ConnectionError, TimeoutError):  # the client went away
            Handler(conn, address, self)


@dataclass
class _WriteApi:
    """How one write endpoint names its parameters and shapes its errors."""

    name: str
    db_param: str
    default_precision: str
    partial: bool  # v3 accepts partial writes by default; v1/v2 are all-or-nothing

    def error(self, status: int, message: str, code: str = "invalid") -> HttpError:
        if self.name == "v2":
            return _json_error(status, {"code": code, "message": message})
        if self.name == "v1":
            return _json_error(status, {"error": message})
        return _json_error(status, {"error": message, "data": None})


_V3 = _WriteApi("v3", "db", "auto", True)
_V2 = _WriteApi("v2", "bucket", "ns", False)
_V1 = _WriteApi("v1", "db", "ns", False)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"localflux/{__version__}"
    timeout = _IDLE_TIMEOUT
    server: Api  # type: ignore[assignment]  # our Api stands in for socketserver's server
    query: dict[str, str] = {}  # replaced per request, never mutated
    _body_read = False

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _dispatch logs one line per request with its duration

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._send(
            204,
            b"",
            headers={
                "Access-Control-Allow-Methods": "*",
                "Access-Control-Allow-Headers": "*",
                "Access-Control-Max-Age": "86400",
            },
        )

    # --- plumbing ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        started = time.perf_counter()
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self._body_read = False
        status = 500
        try:
            self._authenticate(url.path)
            status = self._route(url.path)
        except HttpError as error:
            status = error.status
            self._send(error.status, error.body, error.content_type)
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            self._send(500, b"internal error", "text/plain")
        log.debug(
            "%s %s -> %d (%.1f ms)",
            self.command,
            url.path,
            status,
            (time.perf_counter() - started) * 1000,
        )

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not self._body_read:
            self._discard_body()
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authenticate(self, path: str) -> None:
        expected = self.server.token
        if not expected:
            return
        header = self.headers.get("Authorization")
        given = None
        if path in ("/write", "/query") and "p" in self.query:
            given = self.query["p"]
        elif header is not None:
            try:
                given = token_from_header(header)
            except MalformedAuthorization as error:
                raise _json_error(400, {"error": str(error)}) from None
        if not token_matches(given, expected):
            raise HttpError(401, b"")

    def _discard_body(self) -> None:
        """Read an unread request body so the connection can carry the next request."""
        self._body_read = True
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._read_chunked(_DRAIN_LIMIT)
        elif length:
            remaining = int(length)
            if remaining > _DRAIN_LIMIT:
                self.close_connection = True
                return
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)

    def _read_chunked(self, limit: int) -> bytes | None:
        """A chunked body, or None (after reading it all) when it is longer than `limit`."""
        parts = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            except ValueError:
                self.close_connection = True
                raise HttpError(400, "malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts) if total <= limit else None
            total += size
            chunk = self.rfile.read(size)
            self.rfile.readline()
            if total <= limit:
                parts.append(chunk)

    def _body(self, too_large: HttpError) -> bytes:
        """The request body, gunzipped, within the size limit."""
        limit = self.server.max_request_bytes
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise HttpError(400, f"unacceptable content-encoding: {encoding}")
        self._body_read = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked(limit)
            if body is None:
                raise too_large
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > limit:
                self._body_read = False  # _send drains it
                raise too_large
            body = self.rfile.read(length)
        if len(body) > limit:
            raise too_large
        if encoding == "gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(body, limit + 1)
            except zlib.error as error:
                raise HttpError(400, f"error decoding gzip stream: {error}") from None
            if len(body) > limit:
                raise too_large
        return body

    # --- routes ------------------------------------------------------------------------------

    def _route(self, path: str) -> int:
        method = self.command
        if path == "/api/v3/write_lp" and method == "POST":
            return self._write(_V3)
        if path == "/api/v2/write" and method == "POST":
            return self._write(_V2)
        if path == "/write" and method == "POST":
            return self._write(_V1)
        if path == "/api/v3/query_sql" and method in ("GET", "POST"):
            return self._query_sql()
        if path == "/api/v3/query_influxql" and method in ("GET", "POST"):
            raise HttpError(501, "InfluxQL is not supported by localflux: use /api/v3/query_sql")
        if path in ("/health", "/api/v1/health") and method == "GET":
            self._send(200, b"OK", "text/plain; charset=utf-8")
            return 200
        if path == "/ping" and method in ("GET", "POST"):
            return self._ping()
        if path == "/api/v3/configure/database":
            return self._configure_database(method)
        raise HttpError(404, "not found")

    def _ping(self) -> int:
        body = json.dumps(
            {
                "product_name": "localflux (InfluxDB 3 Core compatible)",
                "version": VERSION,
                "revision": __version__,
                "process_id": self.server.process_id,
            }
        ).encode()
        request_id = str(uuid.uuid4())
        headers = {
            "X-Influxdb-Version": VERSION,
            "X-Influxdb-Build": "Core",
            "Request-Id": request_id,
            "X-Request-Id": request_id,
        }
        self._send(200, body, "application/json", headers)
        return 200

    def _flag(self, name: str, default: bool) -> bool:
        value = self.query.get(name)
        if value is None or value == "":
            return default
        if value in ("true", "false"):
            return value == "true"
        raise HttpError(400, f"serde error: invalid value for '{name}': expected true or false")

    def _write(self, api: _WriteApi) -> int:
        db = self.query.get(api.db_param)
        if not db:
            raise api.error(400, f"missing query parameter '{api.db_param}'")
        name_error = database_name_error(db, allow_rp=api.name == "v1")
        if name_error:
            raise api.error(400, name_error)
        db = db.split("/")[0]  # v1 may name a retention policy as db/rp; there is only one
        try:
            precision = lineprotocol.precision_name(
                self.query.get("precision"), api.default_precision
            )
        except ValueError as error:
            raise api.error(400, str(error)) from None
        accept_partial = self._flag("accept_partial", True) if api.partial else False
        no_sync = self._flag("no_sync", False)
        limit = self.server.max_request_bytes
        body = self._body(
            api.error(413, f"max request size ({limit} bytes) exceeded", "request too large")
        )
        now_ns = time.time_ns()
        try:
            parsed = lineprotocol.parse(body)
            rejected = self.server.store.write(
                db,
                parsed,
                precision=precision,
                now_ns=now_ns,
                accept_partial=accept_partial,
                no_sync=no_sync,
            )
        except lineprotocol.BodyError as error:
            raise api.error(400, str(error)) from None
        except WriteRejected as rejection:
            error = rejection.error
            if api.name == "v3":
                raise _json_error(
                    400, {"error": "line protocol parsing error", "data": error.as_json()}
                ) from None
            raise api.error(
                400,
                f"failed to parse line protocol: errors encountered on line(s): "
                f"line {error.line_number}: {error.message}",
            ) from None
        if rejected:
            raise _json_error(
                400,
                {
                    "error": "partial write of line protocol occurred",
                    "data": [error.as_json() for error in rejected],
                },
            )
        self._send(204, b"")
        return 204

    def _query_sql(self) -> int:
        if self.command == "GET":
            request: dict[str, object] = dict(self.query)
            if "params" in request:
                try:
                    request["params"] = json.loads(str(request["params"]))
                except ValueError as error:
                    raise HttpError(400, f"serde json error: {error}") from None
        else:
            try:
                request = json.loads(self._body(HttpError(413, "request too large")) or b"{}")
            except ValueError as error:
                raise HttpError(400, f"serde json error: {error}") from None
            if not isinstance(request, dict):
                raise HttpError(400, "serde json error: expected a JSON object")
        db, sql = request.get("db"), request.get("q")
        if not isinstance(db, str) or not isinstance(sql, str) or not db or not sql:
            raise HttpError(400, "missing query parameters 'db' and 'q'")
        fmt = request.get("format") or formats.format_from_accept(self.headers.get("Accept"))
        if fmt not in formats.CONTENT_TYPES:
            raise HttpError(400, f"invalid format '{fmt}': use json, jsonl, csv, pretty or parquet")
        params = request.get("params")
        if params is not None and not isinstance(params, dict):
            raise HttpError(400, "serde json error: params must be a JSON object")
        try:
            table = self.server.engine.query(db, sql, params)
        except DatabaseNotFound as error:
            raise _json_error(404, {"error": f"query error: {error}", "data": None}) from None
        except QueryError as error:
            raise HttpError(400, str(error)) from None
        body, content_type = formats.render(table, str(fmt))
        self._send(200, body, content_type)
        return 200

    def _configure_database(self, method: str) -> int:
        store = self.server.store
        if method == "GET":
            fmt = self.query.get("format") or "json"
            if fmt not in formats.CONTENT_TYPES:
                raise HttpError(400, f"invalid format '{fmt}'")
            table = pa.table({"iox::database": pa.array(store.database_names(), pa.string())})
            body, content_type = formats.render(table, fmt)
            self._send(200, body, content_type)
            return 200
        if method == "POST":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type != "application/json" and not content_type.endswith("+json"):
                raise HttpError(415, "unacceptable content-type, expected: application/json")
            try:
                request = json.loads(self._body(HttpError(413, "request too large")))
                db = request["db"]
            except (ValueError, KeyError, TypeError) as error:
                raise HttpError(400, f"serde json error: {error}") from None
            name_error = database_name_error(str(db))
            if name_error:
                raise _json_error(400, {"error": name_error, "data": None})
            try:
                store.create_database(db)
            except DatabaseExists as error:
                raise HttpError(409, str(error)) from None
            self._send(200, b"")
            return 200
        if method == "DELETE":
            db = self.query.get("db")
            if not db:
                raise HttpError(400, "missing query parameters 'db'")
            try:
                store.delete_database(db)
            except DatabaseNotFound as error:
                raise HttpError(404, str(error)) from None
            self._send(200, b"")
            return 200
        raise _json_error(405, {"error": "unsupported method", "data": None})
