"""Core's token check, shared by the HTTP API and Flight.

`Authorization: Bearer <token>` or `Token <token>`; with `Basic`, the token is the part of the
decoded `user:token` after the last colon. Anything else is malformed (HTTP 400); a missing
or wrong token is unauthenticated (HTTP 401, Flight Unauthenticated).

>>> token_from_header("Token abc"), token_from_header("Bearer abc")
('abc', 'abc')
>>> import base64
>>> token_from_header("Basic " + base64.b64encode(b"me:abc").decode())
'abc'
>>> token_from_header("Digest abc")
Traceback (most recent call last):
...
localflux.influxdb.auth.MalformedAuthorization: Authorization header was malformed, the request was not in the form of 'Authorization: <auth-scheme> <token>', supported auth-schemes are Bearer, Token and Basic
"""

from __future__ import annotations

import base64
import binascii
import hmac

MALFORMED = (
    "Authorization header was malformed, the request was not in the form of "
    "'Authorization: <auth-scheme> <token>', supported auth-schemes are Bearer, Token and Basic"
)


class MalformedAuthorization(ValueError):
    pass


def token_from_header(value: str) -> str:
    parts = value.split(" ")
    if len(parts) != 2 or parts[0] not in ("Bearer", "Token", "Basic"):
        raise MalformedAuthorization(MALFORMED)
    scheme, token = parts
    if scheme != "Basic":
        return token
    try:
        decoded = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise MalformedAuthorization(MALFORMED) from None
    user, colon, secret = decoded.rpartition(":")
    if not colon or ":" in user:
        raise MalformedAuthorization(MALFORMED)
    return secret


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak the token."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
