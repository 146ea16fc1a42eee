"""Probes `make run` uses before and after starting the local system.

Before: is each port free? A service that finds its port taken fails with its own message
somewhere in the interleaved output of six processes; checking first lets the launcher name the
service and the variable to change, and start nothing.

After: does each service answer? A process that is alive is not necessarily serving (Mage needs
tens of seconds for its migrations), and the URLs are printed only once they work.

HTTP probes bypass any proxy from the environment: these are loopback URLs, and a corporate
`http_proxy` would otherwise answer for them (or refuse them).

>>> probe = Probe("http://127.0.0.1:9/health")
>>> probe.kind, probe.port
('http', 9)
>>> Probe("tcp://127.0.0.1:1883").kind
'tcp'
>>> Probe("udp://127.0.0.1:1")
Traceback (most recent call last):
...
ValueError: unsupported probe 'udp://127.0.0.1:1': use http://... or tcp://host:port
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def port_problem(port: int, host: str = "127.0.0.1") -> str | None:
    """Why `port` cannot be bound on `host` right now (None when it can).

    SO_REUSEADDR matches what the services do, so a port that only has connections in
    TIME_WAIT from the previous run counts as free, while a listener still counts as taken.

    >>> with socket.create_server(("127.0.0.1", 0)) as taken:
    ...     port_problem(taken.getsockname()[1]) is not None
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.strerror or str(error)
    return None


def tcp_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url: str, timeout: float = 3.0) -> bool:
    """Whether `url` answers 200 (not just any status: a 404 means the wrong service)."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class Probe:
    """A readiness check: `http://...` must answer 200, `tcp://host:port` must accept."""

    target: str

    def __post_init__(self) -> None:
        if self.kind not in ("http", "tcp") or not urlsplit(self.target).port:
            raise ValueError(
                f"unsupported probe {self.target!r}: use http://... or tcp://host:port"
            )

    @property
    def kind(self) -> str:
        return urlsplit(self.target).scheme

    @property
    def port(self) -> int:
        return urlsplit(self.target).port or 0

    def ready(self) -> bool:
        if self.kind == "tcp":
            return tcp_accepts(urlsplit(self.target).hostname or "127.0.0.1", self.port)
        return http_answers(self.target)
