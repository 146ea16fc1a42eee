"""Requests that used to hang, crash or fool the inbox: lengths that are no numbers, JSON
nested too deep, web pages posting fake alerts or reading them through DNS rebinding."""

from __future__ import annotations

import socket

import pytest

from tests.inbox.helpers import Inbox, get, post, post_json

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize("length", ["-1", "abc", "1e3"])
def test_an_invalid_content_length_is_a_400(inbox: Inbox, length: str) -> None:
    """`-1` used to read until the connection closed (100 MiB were buffered)."""
    with socket.create_connection(("127.0.0.1", inbox.port), timeout=10) as sock:
        sock.sendall(
            f"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.0 400") or answer.startswith("HTTP/1.1 400"), answer
    assert "Content-Length" in answer
    assert inbox.messages() == []


def test_deeply_nested_json_is_a_400(inbox: Inbox) -> None:
    """It used to end the connection without an answer (a RecursionError)."""
    status, body = post(
        inbox.hook, b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"}
    )
    assert status == 400
    assert "nested too deeply" in body
    assert post_json(inbox.hook, {"text": "still here"})[0] == 200


def test_a_page_on_another_origin_cannot_post(inbox: Inbox) -> None:
    """A form on any site could post fake alerts: browsers name the page in `Origin`."""
    form = b'payload={"text":"Anomaly on machine9 (fake)"}'
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        status, body = post(inbox.hook, form, {"Content-Type": FORM, "Origin": origin})
        assert status == 403, origin
        assert "may not post" in body
    assert inbox.messages() == []
    # The inbox's own page is its own origin; senders that are no browser send none.
    own = {"Content-Type": "application/json", "Origin": inbox.url}
    assert post(inbox.hook, b'{"text": "from the page"}', own)[0] == 200
    assert post_json(inbox.hook, {"text": "from Mage"})[0] == 200
    assert [m["text"] for m in inbox.messages()] == ["from the page", "from Mage"]


def status_of(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request exactly as written (one Host header, ours) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        answer = sock.makefile("rb").read()
    return int(answer.split(b" ", 2)[1]), answer


def test_a_foreign_host_name_is_refused(inbox: Inbox) -> None:
    """DNS rebinding: a page on evil.example re-pointed to 127.0.0.1 sends its own name."""
    post_json(inbox.hook, {"text": "Anomaly on machine2"})
    for path in ("/", "/api/messages"):
        status, answer = status_of(
            inbox.port, f"GET {path} HTTP/1.1\r\nHost: evil.example:{inbox.port}\r\n\r\n"
        )
        assert status == 403
        assert b"not a loopback name" in answer
    body = b'{"text": "fake"}'
    status, _ = status_of(
        inbox.port,
        f"POST /hook HTTP/1.1\r\nHost: evil.example\r\nContent-Length: {len(body)}\r\n\r\n",
        body,
    )
    assert status == 403
    status, body_text, _ = get(f"http://localhost:{inbox.port}/api/messages")
    assert status == 200 and "machine2" in body_text
    assert len(inbox.messages()) == 1
