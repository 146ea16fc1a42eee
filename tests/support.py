"""Plain helpers for tests: ports, readiness polling, managed process groups, a webhook record.

Fixtures in conftest.py build on these; tests import them from here (never from conftest).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# Debian's Chromium, headless; the background-networking flags keep it from calling out on a
# machine with no network (each refused connection would slow it down).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `check` until it is true or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


@dataclass
class ManagedProcess:
    """A command running in its own process group, with its combined output in a log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> int | None:
        """Signal the whole group, escalate to SIGKILL after `grace` seconds, reap."""
        self.signal_group(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        return self.popen.returncode


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A local HTTP server standing in for a Slack incoming webhook.

    It records every request. `respond_with(status, body, headers)` queues answers for the next
    requests (e.g. 500, or 429 with Retry-After); with nothing queued it answers 200 "ok" as
    Slack does.
    """

    port: int
    requests: list[ReceivedRequest] = field(default_factory=list)
    _queued: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def respond_with(
        self, status: int, body: str = "", headers: Mapping[str, str] | None = None, times: int = 1
    ) -> None:
        with self._lock:
            self._queued.extend([(status, body.encode(), dict(headers or {}))] * times)

    def next_response(self) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            return self._queued.pop(0) if self._queued else (200, b"ok", {})

    def record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def payloads(self) -> list[object]:
        with self._lock:
            return [r.json() for r in self.requests]
