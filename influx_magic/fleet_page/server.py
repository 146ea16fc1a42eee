"""`python -m influx_magic.fleet_page`: the fleet status page, served on `FLEET_PAGE_PORT`.

`make run` starts it beside Mage; it reads what `influx-magic status` reads (the production
state, the operator state, `machines.yaml`, `anomaly_scores`), so the page shows what the next
pipeline run does.

Routes:
- `GET /`: the page (refreshing itself);
- `GET /api/status`: the status as JSON (`influx_magic.operations.fleet_status`); a state or
  settings file that cannot be read is a note in it, not an error page;
- `GET /api/history`: each machine's highest score per 10 s over the last hour, by unique_id;
- `GET /health`: `ok` (readiness).

Same origin only: the page fetches its own origin (its CSP allows nothing else), the API
answers no CORS requests (no `Access-Control-Allow-Origin`) and refuses with 403 a request a
browser marks as coming from another site (`Sec-Fetch-Site`) or another origin (`Origin`).
Bound to a loopback address it answers only loopback host names (`magic_common.http_guard`),
so a page that re-points its own name to 127.0.0.1 (DNS rebinding) reads nothing.
Standard library only: the page is polled by a few browsers, and must start in well under a
second.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleetwatch.state import StateError
from influx_magic.fleet_page.page import render_page
from influx_magic.influx import InfluxError, InfluxSettings
from influx_magic.operations import fleet_status
from influx_magic.operations.machines_file import MachinesFileError
from influx_magic.operations.operator_store import OperatorStateError
from influx_magic.operations.production_state import NoSharedStateDir, state_root
from influx_magic.settings import SETTINGS, load_dotenv
from influx_magic.shards import ShardLayoutError
from magic_common.http_guard import host_allowed, host_refusal
from magic_common.http_serving import listen_failure, serve_until_stopped

log = logging.getLogger("influx_magic.fleet_page")

PAGE_CSP = (
    "default-src 'none'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
CROSS_SITE = ("cross-site", "same-site")


class FleetPageServer(ThreadingHTTPServer):
    """The HTTP server, holding the settings its handlers read the status with."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.state_dir = state_root(env)
        self.influx = InfluxSettings.from_env(env)
        super().__init__(address, FleetPageHandler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def status(self) -> dict[str, Any]:
        try:
            return fleet_status.collect(self.state_dir, self.influx, self.env).to_json()
        except (
            StateError,
            MachinesFileError,
            OperatorStateError,
            ShardLayoutError,
            ValueError,
        ) as error:
            now = datetime.now(UTC)
            return fleet_status.FleetStatus(now, self.state_dir, [], [str(error)]).to_json()

    def history(self) -> dict[str, Any]:
        try:
            return fleet_status.score_history(self.influx, datetime.now(UTC))
        except InfluxError as error:
            log.warning("history unavailable: %s", error)
            return {}


class FleetPageHandler(BaseHTTPRequestHandler):
    server: FleetPageServer
    server_version = "influx-magic-fleet-page"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        host = self.headers.get("Host")
        if not host_allowed(host, self.server.server_address[0]):
            self.close_connection = True
            body = (host_refusal(host) + "\n").encode()
            self._send(HTTPStatus.FORBIDDEN, body, "text/plain; charset=utf-8", {})
        elif path == "/health":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8", {})
        elif path == "/":
            nonce = secrets.token_urlsafe(16)
            self._send(
                HTTPStatus.OK,
                render_page(nonce).encode("utf-8"),
                "text/html; charset=utf-8",
                {"Content-Security-Policy": PAGE_CSP.format(nonce=nonce)},
            )
        elif path in ("/api/status", "/api/history"):
            if not self._same_origin():
                self._send(
                    HTTPStatus.FORBIDDEN, b"same-origin only\n", "text/plain; charset=utf-8", {}
                )
                return
            value = self.server.status() if path == "/api/status" else self.server.history()
            body = json.dumps(value, ensure_ascii=False).encode("utf-8")
            self._send(HTTPStatus.OK, body, "application/json", {"Cache-Control": "no-store"})
        else:
            self._send(HTTPStatus.NOT_FOUND, f"not found: {path}\n".encode(), "text/plain", {})

    do_HEAD = do_GET  # noqa: N815 - same answers without the body

    def _same_origin(self) -> bool:
        """False for a request a browser sent from another site or origin."""
        if self.headers.get("Sec-Fetch-Site", "") in CROSS_SITE:
            return False
        origin = self.headers.get("Origin")
        if origin is None:
            return True
        host = self.headers.get("Host", "")
        return urlsplit(origin).netloc == host

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str]
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m influx_magic.fleet_page", description="The fleet status page."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: FLEET_PAGE_PORT, 5007)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load_dotenv()
    env = dict(os.environ)
    try:
        port = args.port if args.port is not None else SETTINGS.integer("FLEET_PAGE_PORT", env)
    except ValueError as error:
        log.error("%s", error)
        return 2
    try:
        server = FleetPageServer((args.host, port), env)
    except NoSharedStateDir as error:
        log.error("%s", error)
        return 1
    except OSError as error:
        log.error("%s", listen_failure(error, args.host, port, "FLEET_PAGE_PORT"))
        return 1
    serve_until_stopped(
        server,
        lambda: log.info("fleet page on %s/ (state %s)", server.base_url, Path(server.state_dir)),
    )
    log.info("fleet page stopped")
    return 0
