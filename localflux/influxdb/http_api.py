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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa

from localflux import __version__
from localflux.influxdb import formats, lineprotocol
from localflux.influxdb.answers import Answers
from localflux.influxdb.auth import MalformedAuthorization, token_from_header, token_matches
from localflux.influxdb.front import Connection
from localflux.influxdb.http_body import BadBody, BodyReader, TooLarge, TooSlow
from localflux.influxdb.query import QueryError
from localflux.influxdb.query_process import ClientGone, ProcessFailed, QueryTimedOut
from localflux.influxdb.storage import DatabaseExists, DatabaseNotFound, Store, WriteRejected
from magic_common.http_guard import content_length, host_allowed, host_refusal, origin_allowed

log = logging.getLogger(__name__)

VERSION = f"3.11.0+localflux.{__version__}"
MAX_REQUEST_BYTES = 10 * 1024 * 1024
# Bodies over the limit are still read and dropped (up to this, within the request's time
# limit) so a client that sends before it reads sees the 413, not a reset.
_DRAIN_LIMIT = 256 * 1024 * 1024
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


def _parse_json(data: bytes | str) -> Any:
    """A request's JSON, or a 400 (also for JSON nested deeper than the parser recurses)."""
    try:
        return json.loads(data)
    except ValueError as error:
        raise HttpError(400, f"serde json error: {error}") from None
    except RecursionError:
        raise HttpError(400, "serde json error: nested too deeply") from None


def _json_error(status: int, payload: object) -> HttpError:
    return HttpError(status, json.dumps(payload, separators=(",", ":")), "application/json")


@dataclass
class Api:
    """What the handlers share: the store, the query engine and the server's settings."""

    store: Store
    answers: Answers
    token: str | None
    max_request_bytes: int = MAX_REQUEST_BYTES
    idle_timeout: float = 30.0
    bind_host: str = "127.0.0.1"
    cors_origins: frozenset[str] = frozenset()
    process_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def serve(self, conn: socket.socket, address: tuple[str, int], state: Connection) -> None:
        """Serve HTTP/1.1 requests on an accepted connection until it closes; `state` tells
        the front when a request is in progress (an idle connection may be closed)."""
        with contextlib.suppress(ConnectionError, TimeoutError):  # the client went away
            Handler(conn, address, self, state)


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
    server: Api  # type: ignore[assignment]  # our Api stands in for socketserver's server
    query: dict[str, str] = {}  # replaced per request, never mutated
    _body_read = False

    def __init__(
        self, request: socket.socket, address: tuple[str, int], server: Api, state: Connection
    ) -> None:
        self.state = state
        super().__init__(request, address, server)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # each read and write, not just the first
        super().setup()

    def handle_one_request(self) -> None:
        self.state.idle()  # waiting for a request: the front may close it when idle too long
        super().handle_one_request()

    def parse_request(self) -> bool:
        # The head is read while the connection still counts as idle, so a client trickling
        # header lines is closed by the front's idle watch like a silent one.
        parsed = super().parse_request()
        if not self.state.busy():  # closed as idle just as the head completed: drop it
            self.close_connection = True
            return False
        return parsed

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _dispatch logs one line per request with its duration

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._dispatch()

    # --- plumbing ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        started = time.perf_counter()
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self._body_read = False
        status = 500
        try:
            self._reader = self._framing()
            self._check_browser()
            if self.command == "OPTIONS":
                status = self._preflight()
            else:
                self._authenticate(url.path)
                status = self._route(url.path)
        except HttpError as error:
            status = error.status
            self._send(error.status, error.body, error.content_type)
        except ConnectionError:
            raise  # the client went away: nothing to answer (Api.serve ends the connection)
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
        self._send_head(status, content_type, len(body), headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_head(
        self,
        status: int,
        content_type: str | None,
        length: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not self._body_read:
            self._discard_body()
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        origin = self.headers.get("Origin")
        if origin is not None and self.server.cors_origins:
            self.send_header("Vary", "Origin")
            if origin_allowed(origin, self.server.cors_origins):
                self.send_header("Access-Control-Allow-Origin", origin)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

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

    def _check_browser(self) -> None:
        """Refuse web pages: a foreign Host (DNS rebinding) or an origin not allowed."""
        host = self.headers.get("Host")
        if not host_allowed(host, self.server.bind_host):
            raise HttpError(403, host_refusal(host))
        origin = self.headers.get("Origin")
        if not origin_allowed(origin, self.server.cors_origins):
            raise HttpError(
                403,
                f"refused: a web page on {origin} may not use this server; name its origin "
                "in LOCALFLUX_CORS_ORIGINS to allow it",
            )

    def _preflight(self) -> int:
        """A browser asking whether it may send a request (origins allowed reach here)."""
        headers = {"Allow": "GET, POST, DELETE, OPTIONS"}
        if self.headers.get("Origin") is not None:
            headers.update(
                {
                    "Access-Control-Allow-Methods": "GET, POST, DELETE",
                    "Access-Control-Allow-Headers": (
                        "Authorization, Content-Type, Content-Encoding, Accept"
                    ),
                    "Access-Control-Max-Age": "600",
                }
            )
        self._send(204, b"", headers=headers)
        return 204

    def _framing(self) -> BodyReader:
        """How the body is framed (declared length or chunked); malformed framing is a 400 and
        the connection closes, as the next request's start cannot be found."""
        try:
            length = content_length(self.headers.get_all("Content-Length") or [])
            codings = [
                coding.strip().lower()
                for value in self.headers.get_all("Transfer-Encoding") or []
                for coding in value.split(",")
                if coding.strip()
            ]
            if codings and codings != ["chunked"]:
                raise HttpError(501, f"unsupported Transfer-Encoding: {', '.join(codings)}")
            if codings and length is not None:
                raise ValueError("a request may not declare both Content-Length and chunked")
        except (ValueError, HttpError) as error:
            self._body_read = True
            self.close_connection = True
            raise error if isinstance(error, HttpError) else HttpError(400, str(error)) from None
        return BodyReader(
            self.rfile,
            self.connection,
            length=length,
            chunked=bool(codings),
            deadline=time.monotonic() + self.server.idle_timeout,
        )

    def _discard_body(self) -> None:
        """Read an unread request body so the connection can carry the next request."""
        self._body_read = True
        if not self._reader.drain(_DRAIN_LIMIT):
            self.close_connection = True
        self.connection.settimeout(self.timeout)

    def _body(self, too_large: HttpError) -> bytes:
        """The request body, gunzipped, within the size limit (checked while reading)."""
        limit = self.server.max_request_bytes
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise HttpError(400, f"unacceptable content-encoding: {encoding}")
        self._body_read = True
        try:
            return self._reader.read(limit, gzip=encoding == "gzip")
        except TooLarge:
            self._body_read = False  # _send drains the rest
            raise too_large from None
        except BadBody as error:
            self.close_connection = True
            raise HttpError(400, str(error)) from None
        except TooSlow:
            self.close_connection = True
            raise HttpError(
                408, f"the request body did not arrive within {self.server.idle_timeout:g} s"
            ) from None
        finally:
            self.connection.settimeout(self.timeout)

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
        except OSError as error:  # a full disk, say: nothing was acknowledged, and why
            log.error("write to %s not stored: %s", db, error)
            reason = error.strerror or str(error)
            raise api.error(
                500, f"write buffer error: the write was not stored: {reason}", "internal error"
            ) from None
        except WriteRejected as rejection:
            error = rejection.error
            if api.name == "v3":
                raise _json_error(
                    400, {"error": "line protocol parsing error", "data": error.as_json()}
                ) from None
            # Core's text ("write buffer error: ..."), which clients match; then the reason.
            raise api.error(
                400,
                f"write buffer error: parsing for line protocol failed: "
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
                request["params"] = _parse_json(str(request["params"]))
        else:
            request = _parse_json(self._body(HttpError(413, "request too large")) or b"{}")
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
            answer = self.server.answers.rendered(db, sql, params, str(fmt), client=self.connection)
        except DatabaseNotFound as error:
            raise _json_error(404, {"error": f"query error: {error}", "data": None}) from None
        except (QueryError, formats.AnswerTooLarge, QueryTimedOut) as error:
            raise HttpError(400, str(error)) from None
        except ClientGone:
            self.close_connection = True
            return 499  # nginx's "client closed request": logged, never sent
        except ProcessFailed as error:
            log.error("query on %s failed: %s; SQL: %.300s", db, error, sql)
            raise HttpError(500, f"internal error: {error}") from None
        try:
            self._send_head(200, formats.CONTENT_TYPES[str(fmt)], answer.size)
            if self.command != "HEAD":
                answer.send(self.connection)
        finally:
            answer.close()
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
            request = _parse_json(self._body(HttpError(413, "request too large")))
            try:
                db = request["db"]  # type: ignore[index]
            except (KeyError, TypeError) as error:
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
