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
from collections.abc import Callable

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0"
_SNIFF_TIMEOUT = 10.0
_PIPE_BUFFER = 1 << 20


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


class Front:
    """Accept loop on the public port; one thread per connection."""

    def __init__(
        self,
        host: str,
        port: int,
        serve_http: Callable[[socket.socket, tuple[str, int]], None],
        flight_port: int,
    ) -> None:
        self.serve_http = serve_http
        self.flight_address = ("127.0.0.1", flight_port)
        self.listener = socket.create_server((host, port), backlog=128)
        self.port = self.listener.getsockname()[1]
        self._closed = threading.Event()

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                conn, address = self.listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                raise
            threading.Thread(
                target=self._handle, args=(conn, address), name="conn", daemon=True
            ).start()

    def close(self) -> None:
        """Stop accepting (safe to call from a signal handler)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _handle(self, conn: socket.socket, address: tuple[str, int]) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            kind = self._sniff(conn)
            if kind is True:
                self._pipe_to_flight(conn)
            elif kind is False:
                self.serve_http(conn, address)
        except Exception:
            log.exception("connection from %s failed", address)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _sniff(self, conn: socket.socket) -> bool | None:
        """Peek until the bytes decide; None if the client closes or stays silent."""
        deadline = time.monotonic() + _SNIFF_TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([conn], [], [], remaining)
            if not ready:
                return None
            data = conn.recv(len(PREFACE), socket.MSG_PEEK)
            if not data:
                return None
            kind = is_h2c(data)
            if kind is not None:
                return kind
            time.sleep(0.005)  # a partial preface: wait for the rest of it
        return None

    def _pipe_to_flight(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(self.flight_address)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(
            target=_pump, args=(upstream, conn), name="flight-back", daemon=True
        )
        back.start()
        _pump(conn, upstream)
        back.join()
        upstream.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction until EOF, then half-close the other side."""
    try:
        if hasattr(os, "splice"):
            _splice(source, target)
        else:
            _copy(source, target)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def _splice(source: socket.socket, target: socket.socket) -> None:
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
            while moved:
                moved -= os.splice(read_end, target.fileno(), moved)
    finally:
        os.close(read_end)
        os.close(write_end)


def _copy(source: socket.socket, target: socket.socket) -> None:
    buffer = memoryview(bytearray(_PIPE_BUFFER))
    while received := source.recv_into(buffer):
        target.sendall(buffer[:received])
