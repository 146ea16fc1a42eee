"""Queries for the HTTP and Flight APIs, each in its own process, within the server's limits.

The size bound on the SQL (`sql_bounds`) is checked here, before any process starts; the
query runs in a forked child (`query_process`) that plans it, runs it and writes the answer:
Arrow IPC for Flight, the rendered body for HTTP (text formats capped at `max_answer_bytes`,
Parquet not). Errors the child meets come back as data and are raised here again as the
exceptions the API layers map to statuses. Afterwards the server's caches are warmed with
what the query read (in the background), as the child's own cache fills die with it.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Mapping
from typing import BinaryIO

import pyarrow as pa

from localflux.influxdb import formats
from localflux.influxdb.query import QueryEngine, QueryError, Scan
from localflux.influxdb.query_process import Finished, ProcessFailed, QueryProcesses
from localflux.influxdb.sql_bounds import QueryTooComplex, check_size
from localflux.influxdb.storage import DatabaseNotFound

log = logging.getLogger(__name__)

Params = Mapping[str, object] | None


class Answers:
    """What the API layers call to run a query."""

    def __init__(
        self, engine: QueryEngine, processes: QueryProcesses, *, max_answer_bytes: int
    ) -> None:
        self.engine = engine
        self.processes = processes
        self.max_answer_bytes = max_answer_bytes
        self._ready = threading.Event()
        self._warm: queue.SimpleQueue[tuple[str, dict[str, Scan]]] = queue.SimpleQueue()

    def warm_up(self) -> None:
        """Import DataFusion (over a second, with pandas) before the first query forks, then
        serve cache warm-ups. Runs on a thread of its own for the server's lifetime."""
        try:
            # Every module a query process imports, imported here first: a module being
            # imported by another thread when the server forks would hang the child.
            import datafusion  # noqa: F401
            import pyarrow.dataset  # noqa: F401
            import pyarrow.ipc  # noqa: F401
            import pyarrow.parquet  # noqa: F401

            # Creating a session fills DataFusion's function registries (a few ms each
            # query process would pay) without starting its thread pool, which must not
            # exist in the server.
            self.engine.session()
        finally:
            self._ready.set()
        while True:
            database, scans = self._warm.get()
            try:
                self.engine.warm_caches(database, scans)
            except Exception:
                log.exception("warming the caches for a query on %s failed", database)

    def arrow(
        self, database: str, sql: str, params: Params, *, cancelled: Callable[[], bool]
    ) -> pa.Table:
        """The result as an Arrow table (memory-mapped from the child's answer)."""

        def work(out: BinaryIO) -> dict[str, object]:
            table, meta = self._execute(database, sql, params)
            if table is not None:
                # Reserve the memory file's pages in one call, not one page fault at a time.
                os.posix_fallocate(out.fileno(), 0, table.nbytes + (1 << 20))
                # A stream, not a file: batches may carry different tag dictionaries.
                with pa.ipc.new_stream(pa.PythonFile(out, mode="w"), table.schema) as writer:
                    writer.write_table(table)
            return meta

        finished = self._run(work, database, sql, cancelled=cancelled)
        try:
            return pa.ipc.open_stream(finished.buffer()).read_all()
        finally:
            finished.close()

    def rendered(
        self, database: str, sql: str, params: Params, fmt: str, *, client: socket.socket
    ) -> Finished:
        """The HTTP body in `fmt`; the caller sends it (`Finished.send`) and closes it."""
        limit = None if fmt == "parquet" else self.max_answer_bytes

        def work(out: BinaryIO) -> dict[str, object]:
            table, meta = self._execute(database, sql, params)
            if table is not None:
                try:
                    formats.write(table, fmt, out, limit)
                except formats.AnswerTooLarge as error:
                    return {"error": {"type": "too_large", "message": str(error)}}
            return meta

        return self._run(work, database, sql, client=client)

    def _execute(
        self, database: str, sql: str, params: Params
    ) -> tuple[pa.Table | None, dict[str, object]]:
        """In the child: the result and the meta to send back, or no result and the error."""
        try:
            table, scans = self.engine.run(database, sql, params)
        except DatabaseNotFound as error:
            return None, {"error": {"type": "not_found", "name": error.name}}
        except QueryError as error:
            return None, {"error": {"type": "query", "message": str(error)}}
        return table, {"scans": {name: scan.as_json() for name, scan in scans.items()}}

    def _run(
        self,
        work: Callable[[BinaryIO], dict[str, object]],
        database: str,
        sql: str,
        *,
        client: socket.socket | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Finished:
        try:
            check_size(sql)
        except QueryTooComplex as error:
            raise QueryError(str(error)) from None
        self._ready.wait()
        finished = self.processes.run(work, client=client, cancelled=cancelled)
        error = finished.meta.get("error")
        if isinstance(error, dict):
            finished.close()
            raise _error(error)
        scans = finished.meta.get("scans")
        if isinstance(scans, dict):
            self._warm.put((database, {k: Scan.from_json(v) for k, v in scans.items()}))
        return finished


def _error(error: Mapping[str, object]) -> Exception:
    kind = error.get("type")
    if kind == "not_found":
        return DatabaseNotFound(str(error.get("name")))
    if kind == "query":
        return QueryError(str(error.get("message")))
    if kind == "too_large":
        return formats.AnswerTooLarge(str(error.get("message")))
    return ProcessFailed(f"the query failed with {error.get('message')} (see the server log)")
