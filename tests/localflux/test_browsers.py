"""A web page on another origin, in headless Chromium, against a real `localflux serve`.

Every answer used to carry `Access-Control-Allow-Origin: *` and `OPTIONS` allowed every
method: with auth off (the `make run` default) any page the user opened could read the data,
write to it and delete the database. Now pages get nothing unless LOCALFLUX_CORS_ORIGINS
names their origin.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.localflux.helpers import rows, write_lp

pytestmark = [pytest.mark.browser, pytest.mark.localflux_only]

ATTACK = """async (base) => {
  const out = {};
  try {
    const r = await fetch(base + "/api/v3/query_sql?db=machines&q=SELECT%20host%20FROM%20m");
    out.read = await r.text();
  } catch (e) { out.read = "blocked"; }
  try {
    await fetch(base + "/api/v3/write_lp?db=machines",
                {method: "POST", mode: "no-cors", body: "m,host=evil v=666i 1"});
    out.write = "sent";
  } catch (e) { out.write = "blocked"; }
  try {
    const r = await fetch(base + "/api/v3/configure/database?db=machines", {method: "DELETE"});
    out.delete = r.status;
  } catch (e) { out.delete = "blocked"; }
  return out;
}"""


@pytest.fixture
def foreign_page() -> Iterator[str]:
    """An empty page on its own origin (another port of 127.0.0.1)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            body = b"<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_on_another_origin_can_neither_read_nor_write_nor_delete(
    chromium, localflux_server, foreign_page
):
    assert write_lp(localflux_server, "m,host=a v=1i 1").status_code == 204
    page = chromium.new_page()
    page.goto(foreign_page + "/")
    result = page.evaluate(ATTACK, localflux_server.url)
    assert result == {"read": "blocked", "write": "sent", "delete": "blocked"}
    # The opaque write reached the server and was refused there: nothing changed.
    assert rows(localflux_server, "SELECT host, v FROM m") == [{"host": "a", "v": 1}]


def test_an_allowed_origin_may_read(chromium, localflux_factory, foreign_page):
    server = localflux_factory(extra_args=["--cors-origins", foreign_page])
    assert write_lp(server, "m,host=a v=1i 1").status_code == 204
    page = chromium.new_page()
    page.goto(foreign_page + "/")
    result = page.evaluate(ATTACK, server.url)
    assert result["read"] == '[{"host":"a"}]'
    assert result["delete"] == 200
