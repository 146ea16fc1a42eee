"""Arrow Flight `do_get` with the JSON ticket influxdb3-python sends.

Ticket: `{"database": ..., "sql_query": ..., "query_type": "sql"|"influxql", "params": {...}}`.
Errors map to the gRPC codes Core uses: unknown database -> NOT_FOUND, bad SQL or ticket ->
INVALID_ARGUMENT, InfluxQL -> UNIMPLEMENTED, bad token -> UNAUTHENTICATED.

pyarrow turns a Python exception raised in a Flight handler into a gRPC status whose message
carries the formatted traceback; `run()` in server.py sets `sys.tracebacklimit = 0` so that
detail shrinks to `localflux.DatabaseNotFound: <message>` and clients never see our stack.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pyarrow.flight as flight

from localflux.influxdb.answers import Answers
from localflux.influxdb.auth import MalformedAuthorization, token_from_header, token_matches
from localflux.influxdb.query import QueryError
from localflux.influxdb.query_process import ClientGone, ProcessFailed, QueryTimedOut
from localflux.influxdb.storage import DatabaseNotFound

log = logging.getLogger(__name__)


class _Named:
    """Exceptions that read well in the status detail (`localflux.X: message`)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFound(_Named, KeyError):  # KeyError -> gRPC NOT_FOUND
    pass


class InvalidArgument(_Named, ValueError):  # ValueError -> gRPC INVALID_ARGUMENT
    pass


class Unsupported(_Named, NotImplementedError):  # -> gRPC UNIMPLEMENTED
    pass


for _cls in (NotFound, InvalidArgument, Unsupported):
    _cls.__module__ = "localflux"


class _AuthFactory(flight.ServerMiddlewareFactory):
    def __init__(self, token: str) -> None:
        self.token = token

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> None:
        for value in headers.get("authorization", []):
            try:
                if token_matches(token_from_header(value), self.token):
                    return None
            except MalformedAuthorization:
                break
        raise flight.FlightUnauthenticatedError("the request was not authenticated")


class FlightService(flight.FlightServerBase):
    """Runs on an ephemeral loopback port; the front pipes h2c connections to it."""

    def __init__(self, answers: Answers, token: str | None) -> None:
        middleware = {"auth": _AuthFactory(token)} if token else {}
        super().__init__("grpc+tcp://127.0.0.1:0", middleware=middleware)
        self.answers = answers
        # Set by the server once the front exists: marks a call's connection busy.
        self.track_call: Callable[[str], AbstractContextManager[None]] = lambda peer: (
            contextlib.nullcontext()
        )

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.RecordBatchStream:
        with self.track_call(context.peer()):
            return self._do_get(context, ticket)

    def _do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.RecordBatchStream:
        started = time.perf_counter()
        try:
            request = json.loads(ticket.ticket)
            database, sql = request["database"], request["sql_query"]
            params = request.get("params") or None
            if not isinstance(database, str) or not isinstance(sql, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise InvalidArgument("Invalid ticket") from None
        if params is not None and not isinstance(params, dict):
            raise InvalidArgument("Invalid ticket: params must be a JSON object of $name values")
        if request.get("query_type", "sql") != "sql":
            raise Unsupported(
                f"query_type {request.get('query_type')!r} is not supported by localflux: use SQL"
            )
        try:
            table = self.answers.arrow(database, sql, params, cancelled=context.is_cancelled)
        except DatabaseNotFound as error:
            raise NotFound(str(error)) from None
        except QueryError as error:
            raise InvalidArgument(str(error)) from None
        except QueryTimedOut as error:
            raise flight.FlightTimedOutError(str(error)) from None
        except ClientGone:
            raise flight.FlightCancelledError("the client cancelled the query") from None
        except ProcessFailed as error:
            log.error("query on %s failed: %s; SQL: %.300s", database, error, sql)
            raise flight.FlightInternalError(f"internal error: {error}") from None
        log.debug(
            "flight do_get %s: %d rows in %.1f ms",
            database,
            table.num_rows,
            (time.perf_counter() - started) * 1000,
        )
        return flight.RecordBatchStream(table)
