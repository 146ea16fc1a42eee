"""`python -m localflux inbox`: a local stand-in for a Slack incoming webhook, with a page.

With no Slack workspace, `make run` points `SLACK_WEBHOOK_URL` here, so a new user sees the
alerts (and their plots) in a browser. The inbox answers like Slack (200 `ok`, 400 with Slack's
error code) so a sender tested against it behaves the same against Slack, and it never
deduplicates: Slack does not either, so a double delivery stays visible.

Routes:
- `POST /hook` (or `/hook/<anything>`): a Slack message; stored before the 200 answer.
- `GET /`: the page, newest first, refreshing itself.
- `GET /api/messages`: every message, oldest first, as
  `{"received_at", "idempotency_key", "text", "payload"}`.
- `GET /api/status`: `{"count", "latest"}`, cheap enough to poll (readiness checks too).
- `GET /plots/<path>`: files under the plots dir (`FLEETWATCH_OUTPUT_DIR`), never outside it.

Standard library only (ThreadingHTTPServer): alerts arrive a few per minute, and the inbox
should start in well under a second.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import logging
import mimetypes
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from localflux.inbox.page import render_page
from localflux.inbox.settings import SETTINGS
from localflux.inbox.store import (
    MAX_BODY_BYTES,
    InboxMessage,
    InboxStore,
    InvalidMessage,
    parse_slack_body,
)
from magic_common.http_guard import content_length, host_allowed, host_refusal
from magic_common.http_serving import listen_failure, serve_until_stopped

log = logging.getLogger("localflux.inbox.server")

# A refused (too large) body is read and dropped up to this size before the 413 goes out.
DRAIN_LIMIT = 16 * MAX_BODY_BYTES
# Seconds each read or write on a connection may wait (a silent client frees its thread).
REQUEST_TIMEOUT = 30

PAGE_CSP = (
    "default-src 'none'; img-src 'self' http: https: data:; connect-src 'self'; "
    "style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
# A plot is served as a document of its own when opened in a tab; an SVG must not run script.
FILE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def resolve_plot(root: Path, url_path: str) -> Path | None:
    """The file a `/plots/...` path names, or None when it would leave `root`.

    Percent-decoding happens before the check, and symlinks are resolved, so neither
    `%2e%2e/` nor a link pointing outside the plots dir gets out.

    >>> import tempfile; root = Path(tempfile.mkdtemp())
    >>> resolve_plot(root, "/plots/machine2.png") == (root / "machine2.png").resolve()
    True
    >>> resolve_plot(root, "/plots/../secret"), resolve_plot(root, "/plots/%2e%2e/secret")
    (None, None)
    """
    relative = unquote(url_path.removeprefix("/plots/"))
    if "\x00" in relative or relative.startswith("/"):
        return None
    base = root.resolve()
    candidate = (base / relative).resolve()
    return candidate if candidate.is_relative_to(base) else None


class InboxServer(ThreadingHTTPServer):
    """The HTTP server, holding the store and the plots dir for its handlers."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], store: InboxStore, plots_dir: Path, fleet_url: str = ""
    ) -> None:
        self.store = store
        self.plots_dir = plots_dir
        self.fleet_url = fleet_url
        super().__init__(address, InboxHandler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class InboxHandler(BaseHTTPRequestHandler):
    server: InboxServer
    server_version = "localflux-inbox"
    timeout = REQUEST_TIMEOUT

    # --- routing -------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self._refused_host():
            return
        path = urlsplit(self.path).path
        routes: dict[str, Callable[[], None]] = {
            "/": self._page,
            "/api/messages": self._messages,
            "/api/status": self._status,
        }
        if path in routes:
            routes[path]()
        elif path.startswith("/plots/"):
            self._plot(path)
        elif path == "/hook" or path.startswith("/hook/"):
            self._send_text(
                HTTPStatus.METHOD_NOT_ALLOWED, "POST a Slack message (JSON) to this URL\n"
            )
        else:
            self._send_text(HTTPStatus.NOT_FOUND, f"not found: {path}\n")

    do_HEAD = do_GET  # noqa: N815 - same answers without the body (see _send)

    def do_POST(self) -> None:  # noqa: N802
        if self._refused_host() or self._refused_origin():
            return
        path = urlsplit(self.path).path
        if path != "/hook" and not path.startswith("/hook/"):
            self._send_text(HTTPStatus.NOT_FOUND, "POST Slack messages to /hook\n")
            return
        self._receive()

    def _refused_host(self) -> bool:
        """DNS rebinding: a page re-pointing its own name to 127.0.0.1 reads no alerts."""
        host = self.headers.get("Host")
        if host_allowed(host, self.server.server_address[0]):
            return False
        self.close_connection = True
        self._send_text(HTTPStatus.FORBIDDEN, host_refusal(host) + "\n")
        return True

    def _refused_origin(self) -> bool:
        """A form or script on another site may not post (fake alerts); senders that are no
        browser send no Origin, and the inbox's own page is its own origin."""
        origin = self.headers.get("Origin")
        own = f"http://{self.headers.get('Host', '')}"
        if origin is None or origin == own:
            return False
        self.close_connection = True
        self._send_text(
            HTTPStatus.FORBIDDEN, f"refused: a web page on {origin} may not post to the inbox\n"
        )
        return True

    # --- handlers ------------------------------------------------------------------------

    def _receive(self) -> None:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            self._send_text(
                HTTPStatus.LENGTH_REQUIRED, "invalid_payload: Content-Length required\n"
            )
            return
        try:
            length = content_length(self.headers.get_all("Content-Length") or []) or 0
        except ValueError as error:  # -1 used to mean "read until the connection closes"
            self.close_connection = True
            self._send_text(HTTPStatus.BAD_REQUEST, f"invalid_payload: {error}\n")
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._discard(length)
            self._send_text(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request_too_large: {length} bytes, the limit is {MAX_BODY_BYTES}\n",
            )
            return
        body = self.rfile.read(length)
        try:
            payload = parse_slack_body(body, self.headers.get("Content-Type"))
        except InvalidMessage as error:
            log.warning("refused a message from %s: %s", self.client_address[0], error)
            self._send_text(HTTPStatus.BAD_REQUEST, f"{error}\n")
            return
        message = InboxMessage.received(payload, self.headers.get("Idempotency-Key"))
        self.server.store.add(message)
        first_line = message.text.splitlines()[0] if message.text else "(no text)"
        log.info("received: %s", first_line[:200])
        self._send_text(HTTPStatus.OK, "ok")

    def _discard(self, length: int) -> None:
        """Read and drop a refused body (up to `DRAIN_LIMIT`), so the client, still sending,
        gets the 413 instead of a broken pipe when the connection closes under it."""
        left = min(length, DRAIN_LIMIT)
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)

    def _page(self) -> None:
        nonce = secrets.token_urlsafe(16)
        page = render_page(
            self.server.store.all(), f"{self.server.base_url}/hook", nonce, self.server.fleet_url
        )
        self._send(
            HTTPStatus.OK,
            page.encode("utf-8"),
            "text/html; charset=utf-8",
            {"Content-Security-Policy": PAGE_CSP.format(nonce=nonce)},
        )

    def _messages(self) -> None:
        self._send_json([m.to_json() for m in self.server.store.all()])

    def _status(self) -> None:
        messages = self.server.store.all()
        latest = messages[-1].received_at if messages else None
        self._send_json({"count": len(messages), "latest": latest})

    def _plot(self, path: str) -> None:
        target = resolve_plot(self.server.plots_dir, path)
        if target is None:
            log.warning("refused %s: outside the plots dir", path)
            self._send_text(HTTPStatus.FORBIDDEN, "refused: the path leaves the plots dir\n")
            return
        if not target.is_file():
            self._send_text(HTTPStatus.NOT_FOUND, f"no such plot: {path}\n")
            return
        stat = target.stat()
        modified = datetime.fromtimestamp(int(stat.st_mtime), UTC)
        since = self.headers.get("If-Modified-Since")
        if since:
            try:
                if email.utils.parsedate_to_datetime(since) >= modified:
                    self._send(HTTPStatus.NOT_MODIFIED, b"", None, {})
                    return
            except (TypeError, ValueError):
                pass  # an unparsable date means "send it", as RFC 9110 says
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._send(
            HTTPStatus.OK,
            target.read_bytes(),
            content_type,
            {
                "Last-Modified": email.utils.format_datetime(modified, usegmt=True),
                "Cache-Control": "no-cache",
                "Content-Security-Policy": FILE_CSP,
            },
        )

    # --- responses -----------------------------------------------------------------------

    def _send_json(self, value: Any) -> None:
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        self._send(HTTPStatus.OK, body, "application/json", {"Cache-Control": "no-store"})

    def _send_text(self, status: HTTPStatus, text: str) -> None:
        self._send(status, text.encode("utf-8"), "text/plain; charset=utf-8", {})

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str | None, headers: dict[str, str]
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and status != HTTPStatus.NOT_MODIFIED:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


# --- command line --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: INBOX_PORT, 5006)")
    parser.add_argument(
        "--data-dir", type=Path, help="where messages are kept (default: .local/inbox)"
    )
    parser.add_argument(
        "--plots-dir",
        type=Path,
        help="directory served under /plots/ (default: FLEETWATCH_OUTPUT_DIR)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        port = args.port if args.port is not None else SETTINGS.integer("INBOX_PORT")
    except ValueError as error:
        log.error("%s", error)
        return 2
    data_dir = (args.data_dir or SETTINGS.path("INBOX_DATA_DIR")).expanduser().resolve()
    plots_dir = (args.plots_dir or SETTINGS.path("FLEETWATCH_OUTPUT_DIR")).expanduser().resolve()
    plots_dir.mkdir(parents=True, exist_ok=True)
    store = InboxStore(data_dir)
    try:
        server = InboxServer((args.host, port), store, plots_dir, SETTINGS.get("FLEET_PAGE_URL"))
    except OSError as error:
        log.error("%s", listen_failure(error, args.host, port, "INBOX_PORT"))
        return 1
    serve_until_stopped(
        server,
        lambda: log.info(
            "inbox on %s (POST Slack messages to %s/hook); %d message(s) in %s; plots from %s",
            server.base_url,
            server.base_url,
            len(store),
            data_dir,
            plots_dir,
        ),
    )
    log.info("inbox stopped")
    return 0
