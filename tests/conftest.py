"""Fixtures shared by every test: ports, disposable dirs, real processes, a Slack stand-in.

Component tests build on these instead of mocking: they start the real server, broker or
Mage as a process group, wait until it answers, and always kill the whole group afterwards,
printing its log when the test failed so a CI failure can be read without re-running it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import (
    CHROMIUM_FLAGS,
    REPO_ROOT,
    ManagedProcess,
    ReceivedRequest,
    WebhookReceiver,
    free_port,
    http_ok,
    port_open,
    wait_until,
)

# Component fixtures live in their own modules so each component's owner edits only its own.
pytest_plugins = ["tests.fixtures.localflux", "tests.fixtures.mqtt"]


@pytest.fixture
def port_factory() -> Callable[[], int]:
    """Hands out distinct free ports within one test."""
    given: set[int] = set()

    def next_port() -> int:
        while (port := free_port()) in given:
            pass
        given.add(port)
        return port

    return next_port


@pytest.fixture
def local_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A temporary HOME, MAGE_DATA_DIR and `.local`-style dirs, exported to the environment.

    Mage writes to ~/.mage_data, ~/.gitconfig and ~/.ipython; pointing HOME here keeps a test
    run from touching the developer's home or the repository's `.local/`.
    """
    dirs = {
        "HOME": tmp_path / "home",
        "MAGE_DATA_DIR": tmp_path / "mage",
        "LOCALFLUX_DATA_DIR": tmp_path / "influx",
        "FLEETWATCH_STATE_DIR": tmp_path / "state",
        "FLEETWATCH_OUTPUT_DIR": tmp_path / "plots",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    return dirs


@pytest.fixture
def start_process(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ManagedProcess]]:
    """Start commands as process groups; wait for readiness; always clean up.

    `start_process(name, cmd, port=..., url=..., env={...}, timeout=30)` returns once the port
    accepts connections or the URL answers below 500, or fails the test with the process log.
    """
    started: list[ManagedProcess] = []

    def start(
        name: str,
        cmd: Sequence[str],
        *,
        port: int | None = None,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 30.0,
    ) -> ManagedProcess:
        log_path = tmp_path / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            list(cmd),
            cwd=cwd or REPO_ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log_file.close()
        proc = ManagedProcess(name, popen, log_path)
        started.append(proc)

        def ready() -> bool:
            if not proc.alive():
                return False
            if url is not None:
                return http_ok(url)
            if port is not None:
                return port_open(port)
            return True

        if not wait_until(ready, timeout, interval=0.1):
            log = proc.log()
            proc.stop()
            pytest.fail(
                f"{name} did not become ready within {timeout}s "
                f"(exit code {popen.returncode}). Log:\n{log[-5000:]}"
            )
        return proc

    yield start
    failed = getattr(request.node, "rep_call", None)
    for proc in reversed(started):
        proc.stop()
        if failed is not None and failed.failed:
            sys.stderr.write(f"\n----- log of {proc.name} -----\n{proc.log()[-5000:]}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Expose each phase's report on the item, so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def slack_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            receiver.record(
                ReceivedRequest(self.path, dict(self.headers.items()), body, time.time())
            )
            status, reply, headers = receiver.next_response()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def chromium() -> Iterator[object]:
    """Debian's Chromium driven by Playwright (never a browser Playwright downloads itself)."""
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()
