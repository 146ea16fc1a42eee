"""One port for HTTP/1.1 and Arrow Flight, as Core serves both on 8181.

pyarrow's Flight server owns its own gRPC listener and cannot share a socket with a Python
HTTP server, so the public port belongs to this front. It peeks at the first bytes of each
connection: the HTTP/2 cleartext preface (`PRI * HTTP/2.0`, which gRPC sends) means Flight,
and the connection is piped byte for byte to the Flight server on an ephemeral loopback
port; anything else is served in-process by the HTTP handler, with no copy in between.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0"
_PIPE_BUFFER = 1 << 20
# Longest wait between accept attempts after an error (out of file descriptors, say).
_MAX_BACKOFF = 1.0
_WATCH_INTERVAL = 0.5


def is_h2c(peeked: bytes) -> bool | None:
    """True for the h2c preface, False for anything else, None if more bytes are needed.

    >>> is_h2c(b"PRI * HTTP/2.0\\r\\n"), is_h2c(b"POST /api"), is_h2c(b"PR")
    (True, False, None)
    """
    if peeked.startswith(PREFACE):
        return True
    if PREFACE.startswith(peeked):
        return None
    return False


class Connection:
    """One accepted connection as the front sees it: idle (waiting for a request, since
    `idle_since`) or busy (a request in progress). A Flight connection is busy while one of
    its calls runs and idle since its last byte otherwise; only pressure closes it when idle,
    never the timeout, because gRPC channels idle legitimately between queries."""

    def __init__(self, sock: socket.socket, address: tuple[str, int]) -> None:
        self.sock = sock
        self.address = address
        self.idle_since: float | None = time.monotonic()
        self.flight = False
        self.served = False  # has it ever sent a complete request (or a Flight call)?
        self._calls = 0
        self._closed = False
        self._lock = threading.Lock()  # a request starts, or the connection closes: not both

    def idle(self) -> None:
        with self._lock:
            if not self._calls:
                self.idle_since = time.monotonic()

    def busy(self) -> bool:
        """Mark a request in progress; False if the connection was closed as idle first."""
        with self._lock:
            if self._closed:
                return False
            self.idle_since = None
            self.served = True
            return True

    def call_started(self) -> None:
        with self._lock:
            self._calls += 1
            self.idle_since = None
            self.served = True

    def call_ended(self) -> None:
        with self._lock:
            self._calls -= 1
            if not self._calls:
                self.idle_since = time.monotonic()

    def close_if_idle(self, before: float | None = None) -> bool:
        """Close from another thread if no request is in progress (and it has been idle
        since before `before`, when given): the serving thread sees end-of-file and ends."""
        with self._lock:
            if self.idle_since is None or (before is not None and self.idle_since >= before):
                return False
            self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        return True


def _eviction_order(connection: Connection) -> tuple[bool, bool, float]:
    """Which idle connection goes first at the cap: those that never sent a complete request
    (what an attacker holds), then idle HTTP keep-alives, then idle Flight channels; the
    longest-idle first within each."""
    return connection.served, connection.flight, connection.idle_since or 0.0


class Front:
    """Accept loop on the public port; one thread per connection.

    At most `max_connections` are served at once. When a new one arrives at the cap, an idle
    connection is closed to make room, one that never sent a request first (so idle sockets
    cannot hold the cap against real clients, see `_eviction_order`); with none idle, the new
    one waits in the listen backlog. An HTTP
    connection that has not sent a complete request `idle_timeout` seconds after it was
    accepted (or after its previous answer) is closed. Accept errors (out of file
    descriptors, say) are logged and retried with backoff; the server keeps serving.
    """

    def __init__(
        self,
        host: str,
        port: int,
        serve_http: Callable[[socket.socket, tuple[str, int], Connection], None],
        flight_port: int,
        *,
        max_connections: int,
        idle_timeout: float,
    ) -> None:
        self.serve_http = serve_http
        self.flight_address = ("127.0.0.1", flight_port)
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.listener = socket.create_server((host, port), backlog=128)
        self.port = self.listener.getsockname()[1]
        self._closed = threading.Event()
        self._connections: set[Connection] = set()
        self._flight_peers: dict[int, Connection] = {}
        self._changed = threading.Condition()
        threading.Thread(target=self._watch, name="idle-watch", daemon=True).start()

    @contextlib.contextmanager
    def flight_call(self, peer: str) -> Iterator[None]:
        """Mark the connection a Flight call arrived on busy while the call runs. `peer` is
        gRPC's name for the caller (`ipv4:127.0.0.1:PORT`): our own end of the pipe."""
        connection = self._flight_peers.get(int(peer.rsplit(":", 1)[-1] or 0))
        if connection is None:
            yield
            return
        connection.call_started()
        try:
            yield
        finally:
            connection.call_ended()

    def serve_forever(self) -> None:
        backoff = 0.0
        while not self._closed.is_set():
            self._make_room()
            try:
                sock, address = self.listener.accept()
            except OSError as error:
                if self._closed.is_set():
                    return
                backoff = min(_MAX_BACKOFF, max(0.01, backoff * 2))
                log.warning("accept failed (%s); retrying in %.2f s", error, backoff)
                time.sleep(backoff)
                continue
            backoff = 0.0
            connection = Connection(sock, address)
            with self._changed:
                self._connections.add(connection)
            try:
                threading.Thread(
                    target=self._handle, args=(connection,), name="conn", daemon=True
                ).start()
            except RuntimeError as error:  # no thread to be had: refuse this one
                log.warning("cannot serve a connection from %s: %s", address, error)
                self._forget(connection)
                sock.close()

    def close(self) -> None:
        """Stop accepting (safe to call from a signal handler)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _make_room(self) -> None:
        """Wait until a connection may be accepted, closing the longest-idle one at the cap."""
        with self._changed:
            while len(self._connections) >= self.max_connections and not self._closed.is_set():
                idle = [c for c in self._connections if c.idle_since is not None]
                for oldest in sorted(idle, key=_eviction_order):
                    if oldest.close_if_idle():
                        self._connections.discard(oldest)
                        log.debug("at the connection cap: closed idle %s", oldest.address)
                        return
                self._changed.wait(_WATCH_INTERVAL)

    def _forget(self, connection: Connection) -> None:
        with self._changed:
            self._connections.discard(connection)
            self._changed.notify_all()

    def _watch(self) -> None:
        """Close HTTP connections that stayed without a complete request too long."""
        while not self._closed.wait(_WATCH_INTERVAL):
            limit = time.monotonic() - self.idle_timeout
            with self._changed:
                expired = [c for c in self._connections if not c.flight and c.close_if_idle(limit)]
                self._connections.difference_update(expired)
                self._changed.notify_all()
            for connection in expired:
                log.debug(
                    "closed %s: no complete request in %g s", connection.address, self.idle_timeout
                )

    def _handle(self, connection: Connection) -> None:
        conn = connection.sock
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            kind = self._sniff(conn)
            if kind is True:
                connection.flight = True
                self._pipe_to_flight(connection)
            elif kind is False:
                self.serve_http(conn, connection.address, connection)
        except Exception:
            log.exception("connection from %s failed", connection.address)
        finally:
            self._forget(connection)
            with contextlib.suppress(OSError):
                conn.close()

    def _sniff(self, conn: socket.socket) -> bool | None:
        """Peek until the bytes decide; None if the client closes or stays silent (the idle
        watch ends a silent one by closing it)."""
        while True:
            ready, _, _ = select.select([conn], [], [], self.idle_timeout)
            if not ready:
                return None
            data = conn.recv(len(PREFACE), socket.MSG_PEEK)
            if not data:
                return None
            kind = is_h2c(data)
            if kind is not None:
                return kind
            time.sleep(0.005)  # a partial preface: wait for the rest of it

    def _pipe_to_flight(self, connection: Connection) -> None:
        conn = connection.sock
        upstream = socket.create_connection(self.flight_address)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = upstream.getsockname()[1]
        self._flight_peers[peer] = connection
        try:
            back = threading.Thread(
                target=_pump, args=(upstream, conn, connection), name="flight-back", daemon=True
            )
            back.start()
            _pump(conn, upstream, connection)
            back.join()
        finally:
            self._flight_peers.pop(peer, None)
            upstream.close()


def _pump(source: socket.socket, target: socket.socket, connection: Connection) -> None:
    """Copy one direction until EOF, then half-close the other side."""
    try:
        if hasattr(os, "splice"):
            _splice(source, target, connection)
        else:
            _copy(source, target, connection)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def _splice(source: socket.socket, target: socket.socket, connection: Connection) -> None:
    """Move bytes socket -> pipe -> socket inside the kernel (Linux): no copies through
    Python, and the GIL is released for the whole transfer."""
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError):  # a bigger pipe means fewer calls; optional
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BUFFER)
        while True:
            moved = os.splice(source.fileno(), write_end, _PIPE_BUFFER)
            if not moved:
                return
            connection.idle()
            while moved:
                moved -= os.splice(read_end, target.fileno(), moved)
    finally:
        os.close(read_end)
        os.close(write_end)


def _copy(source: socket.socket, target: socket.socket, connection: Connection) -> None:
    buffer = memoryview(bytearray(_PIPE_BUFFER))
    while received := source.recv_into(buffer):
        connection.idle()
        target.sendall(buffer[:received])
