"""HTTP/1.1 by hand, for requests no client library would send (bad lengths, slow heads)."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def connect(port: int, timeout: float = 30) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> RawResponse:
    """One response (with a Content-Length body), or an AssertionError if the server closed
    the connection without answering."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer (got {data!r})"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection in the middle of the body"
        body += chunk
    return RawResponse(status, headers, body[:length])


def request(port: int, raw: bytes, timeout: float = 30) -> RawResponse:
    """Send `raw` on a new connection and read the answer."""
    with connect(port, timeout) as sock:
        sock.sendall(raw)
        return read_response(sock)


def closed_by_server(sock: socket.socket, wait: float) -> bool:
    """Whether the server closes `sock` within `wait` seconds (any bytes it sends first,
    such as an error answer, are read and ignored)."""
    deadline = time.monotonic() + wait
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def post_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def many_idle(port: int, count: int):
    """`count` connections that never send a byte."""
    socks = []
    try:
        for _ in range(count):
            socks.append(connect(port))
        yield socks
    finally:
        for sock in socks:
            sock.close()
