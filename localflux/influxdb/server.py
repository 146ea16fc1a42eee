"""`python -m localflux serve`: a local InfluxDB 3 Core stand-in (HTTP API + Arrow Flight).

    python -m localflux serve --host 127.0.0.1 --port 8181 --data-dir DIR [--token TOKEN]

Port, data dir and token default to LOCALFLUX_PORT, LOCALFLUX_DATA_DIR and LOCALFLUX_TOKEN
(see localflux/influxdb/settings.py). Without a token, auth is off, like Core's `--without-auth`.
See localflux/README.md for the API, the storage design and the data-dir layout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import signal
import sys
import threading
import traceback
from pathlib import Path

from localflux.influxdb.answers import Answers
from localflux.influxdb.flight import FlightService
from localflux.influxdb.front import Front
from localflux.influxdb.http_api import MAX_REQUEST_BYTES, Api
from localflux.influxdb.query import QueryEngine
from localflux.influxdb.query_process import QueryProcesses
from localflux.influxdb.settings import SETTINGS
from localflux.influxdb.storage import DataDirLocked, Store
from magic_common.http_guard import allowed_origins

log = logging.getLogger("localflux.influxdb.server")

# Query processes running at once; more wait (within their time limit) for one to finish.
MAX_RUNNING_QUERIES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=None, help="HTTP + Flight port (LOCALFLUX_PORT)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="WAL and Parquet files (LOCALFLUX_DATA_DIR)"
    )
    parser.add_argument(
        "--token", default=None, help="token clients must send; empty = auth off (LOCALFLUX_TOKEN)"
    )
    parser.add_argument(
        "--compact-interval",
        type=float,
        default=60.0,
        help="seconds before buffered writes are compacted to Parquet (default 60)",
    )
    parser.add_argument(
        "--compact-rows",
        type=int,
        default=1_000_000,
        help="buffered rows that trigger compaction sooner (default 1000000)",
    )
    parser.add_argument(
        "--cache-mb",
        type=int,
        default=512,
        help="memory for decoded Parquet files, so repeated queries skip reading them (default 512)",
    )
    parser.add_argument(
        "--max-request-size",
        type=int,
        default=MAX_REQUEST_BYTES,
        help="largest request body in bytes after gzip decompression (default 10 MiB)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="connections served at once; at the cap the longest-idle one is closed "
        "(LOCALFLUX_MAX_CONNECTIONS, 256)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="seconds a connection may take to send a complete request (LOCALFLUX_IDLE_TIMEOUT, 30)",
    )
    parser.add_argument(
        "--cors-origins",
        default=None,
        help="web page origins allowed to call the API, comma-separated; empty = none "
        "(LOCALFLUX_CORS_ORIGINS)",
    )
    parser.add_argument(
        "--query-timeout",
        type=float,
        default=None,
        help="seconds a query may run before it is stopped; 0 = no limit "
        "(LOCALFLUX_QUERY_TIMEOUT, 60)",
    )
    parser.add_argument(
        "--max-answer-mb",
        type=int,
        default=None,
        help="largest json/jsonl/csv/pretty answer in MiB; Parquet and Flight are not capped "
        "(LOCALFLUX_MAX_ANSWER_MB, 256)",
    )


class _FullTracebacks(logging.Formatter):
    """Our own logs keep full tracebacks although sys.tracebacklimit is 0 (see run)."""

    def formatException(self, ei) -> str:  # noqa: N802 - logging's naming
        return "".join(traceback.format_exception(*ei, limit=128)).rstrip("\n")


def _hide_tracebacks_from_clients() -> None:
    """pyarrow's Flight server formats a handler's exception with `traceback` into the gRPC
    status it sends; with a limit of 0 that is one line instead of our stack."""
    sys.tracebacklimit = 0
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_FullTracebacks("%(asctime)s %(name)s %(levelname)s %(message)s"))


def _quiet_dependencies() -> None:
    """DEBUG is for localflux's request lines; DataFusion logs every plan at DEBUG."""
    root = logging.getLogger()
    logging.getLogger("localflux").setLevel(root.level)
    root.setLevel(max(root.level, logging.INFO))


def _raise_file_limit(max_connections: int) -> None:
    """Raise the soft open-file limit to the hard one: each connection costs file descriptors
    (a Flight connection about eight, with its pipe to the Flight server), and running out
    of them makes accept fail (survived, but new clients then wait)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft < max_connections * 8 + 64:
        log.warning(
            "the open-file limit (%d) may be too low for %d connections; raise `ulimit -n` or "
            "lower LOCALFLUX_MAX_CONNECTIONS",
            soft,
            max_connections,
        )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns 1 if it cannot start (exits the process when done)."""
    _hide_tracebacks_from_clients()
    _quiet_dependencies()
    data_dir = args.data_dir or SETTINGS.path("LOCALFLUX_DATA_DIR")
    port = args.port if args.port is not None else SETTINGS.integer("LOCALFLUX_PORT")
    token = args.token if args.token is not None else SETTINGS.get("LOCALFLUX_TOKEN")
    token = token or None
    try:
        if args.query_timeout is None:
            args.query_timeout = SETTINGS.number("LOCALFLUX_QUERY_TIMEOUT")
        if args.max_answer_mb is None:
            args.max_answer_mb = SETTINGS.integer("LOCALFLUX_MAX_ANSWER_MB")
        if args.max_connections is None:
            args.max_connections = SETTINGS.integer("LOCALFLUX_MAX_CONNECTIONS")
        if args.idle_timeout is None:
            args.idle_timeout = SETTINGS.number("LOCALFLUX_IDLE_TIMEOUT")
    except ValueError as error:
        log.error("%s", error)
        return 2
    try:
        store = Store(
            data_dir,
            compact_rows=args.compact_rows,
            compact_interval=args.compact_interval,
            cache_bytes=args.cache_mb * 1024 * 1024,
        )
    except DataDirLocked as error:
        log.error("%s", error)
        return 1
    processes = QueryProcesses(
        store.fork_guard, timeout=args.query_timeout, max_running=MAX_RUNNING_QUERIES
    )
    answers = Answers(
        QueryEngine(store), processes, max_answer_bytes=args.max_answer_mb * 1024 * 1024
    )
    flight_service = FlightService(answers, token)
    api = Api(
        store,
        answers,
        token,
        max_request_bytes=args.max_request_size,
        idle_timeout=args.idle_timeout,
        bind_host=args.host,
        cors_origins=allowed_origins(
            args.cors_origins
            if args.cors_origins is not None
            else SETTINGS.get("LOCALFLUX_CORS_ORIGINS")
        ),
    )
    _raise_file_limit(args.max_connections)
    try:
        front = Front(
            args.host,
            port,
            api.serve,
            flight_service.port,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
        )
    except OSError as error:
        log.error("cannot listen on %s:%d: %s", args.host, port, error)
        flight_service.shutdown()
        store.close()
        return 1
    flight_service.track_call = front.flight_call
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: front.close())
    store.start_compactor()
    threading.Thread(target=answers.warm_up, name="warm-up", daemon=True).start()
    log.info(
        "localflux serving the InfluxDB 3 API (HTTP and Arrow Flight) on http://%s:%d "
        "(data dir %s, auth %s)",
        args.host,
        front.port,
        data_dir,
        "on" if token else "off",
    )
    try:
        front.serve_forever()
    finally:
        log.debug("stopping: Flight server")
        flight_service.shutdown()
        log.debug("stopping: compacting and closing the store")
        store.close()
    log.info("localflux stopped")
    # Everything is on disk and closed. Skip interpreter finalisation: it would wait for a
    # daemon thread still importing datafusion, or for native threads, for seconds.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
