"""Guards for our small HTTP servers (localflux serve, the inbox): web pages and lengths.

A server on 127.0.0.1 is still reachable from every page the user opens. Two checks keep
those pages out:

- `Host` (DNS rebinding): a page on `evil.example` whose name the attacker re-points to
  127.0.0.1 is same-origin with the local server, so the browser lets it read the answers.
  Its requests still say `Host: evil.example:8181`; a server bound to a loopback address
  answers only loopback names (`localhost`, `*.localhost`, `127.x.x.x`, `::1`), on any port.
  Bound to any other address the check is off: the name clients use is then not known.
- `Origin`: a browser names the page's origin on every cross-origin request (and every
  POST). Requests from an origin that is not allowed are refused before they do anything
  (a "simple" POST needs no preflight, so CORS headers alone would not stop a write), and
  no CORS header is sent unless an allow-list names the origin. Clients that are not
  browsers send no `Origin` and are not affected.

>>> host_allowed("localhost:8181", "127.0.0.1"), host_allowed("127.0.0.9", "127.0.0.1")
(True, True)
>>> host_allowed("evil.example:8181", "127.0.0.1"), host_allowed("evil.example", "0.0.0.0")
(False, True)
>>> host_allowed("[::1]:8181", "::1"), host_allowed("app.localhost", "localhost")
(True, True)
>>> sorted(allowed_origins(" http://localhost:3000, https://grafana.lan/ "))
['http://localhost:3000', 'https://grafana.lan']
>>> origin_allowed(None, frozenset()), origin_allowed("http://evil.example", frozenset())
(True, False)

And `content_length` reads a `Content-Length` the strict way: digits only, so `-1` (which
made a reader wait for the connection to close) and `abc` are errors, not "read to the end".

>>> content_length(["12"]), content_length([])
(12, None)
>>> content_length(["-1"])
Traceback (most recent call last):
...
ValueError: invalid Content-Length: '-1'
"""

from __future__ import annotations

import ipaddress
import re

_DIGITS = re.compile(r"[0-9]{1,19}\Z")


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name means this machine only."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(header: str | None, bind_host: str) -> bool:
    """Whether a request's `Host` header may reach a server bound to `bind_host`."""
    if header is None or not is_loopback(bind_host):
        return True  # HTTP/1.0 clients may send none; browsers always do
    name = header.strip()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":")[0]
    return is_loopback(name)


def allowed_origins(setting: str) -> frozenset[str]:
    """The allow-list from its setting: origins separated by commas (`*` allows any)."""
    return frozenset(part.strip().rstrip("/") for part in setting.split(",") if part.strip())


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request with this `Origin` header (None: not from a page) may proceed."""
    return origin is None or "*" in allowed or origin.rstrip("/") in allowed


def host_refusal(header: str | None) -> str:
    return (
        f"refused: Host {header!r} is not a loopback name; this server is bound to a "
        "loopback address and answers only localhost, 127.0.0.1 or ::1 (DNS rebinding "
        "protection)"
    )


def content_length(values: list[str]) -> int | None:
    """The declared length from every `Content-Length` header of a request, or None when
    there is none; ValueError for a value that is not plain digits or for two that differ."""
    if not values:
        return None
    if len(set(values)) > 1:
        raise ValueError(f"conflicting Content-Length headers: {', '.join(values)}")
    text = values[0].strip()
    if not _DIGITS.match(text):
        raise ValueError(f"invalid Content-Length: {values[0]!r}")
    return int(text)
