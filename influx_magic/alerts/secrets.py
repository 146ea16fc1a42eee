"""Keep webhook URLs out of logs, reprs and exception text.

A Slack incoming-webhook URL is a bearer credential: whoever has it can post to the channel.
It leaks in three ordinary ways, each closed here: our own messages (we only ever print the
masked form), exception text from requests/urllib3 (which quotes host and path; we rewrite it
before it leaves the notifier), and urllib3's DEBUG log of every request line (a logging filter,
installed only while a request is in flight, rewrites those records).

>>> secret = SecretURL("https://hooks.slack.com/services/T000/B000/XXXXXXXX")
>>> secret
SecretURL('https://hooks.slack.com/***')
>>> secret.redact("Max retries exceeded with url: /services/T000/B000/XXXXXXXX")
'Max retries exceeded with url: /***'
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from urllib.parse import urlsplit

MASK = "***"
# Loggers that write request URLs: the connection pool (request line at DEBUG) and the retry
# helper ("Incremented Retry for (url=...)").
_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection")


class SecretURL:
    """A URL whose path and query are secret; str() and repr() show only scheme and host."""

    __slots__ = ("_parts", "_value")

    def __init__(self, value: str) -> None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # Say what is wrong without echoing the value: it may be a real secret, mistyped.
            raise ValueError(
                f"webhook URL must start with http:// or https:// and name a host "
                f"(got {len(value)} characters starting with {value[:8]!r})"
            )
        self._value = value
        self._parts = parts

    def reveal(self) -> str:
        """The real URL, for the one place that sends the request."""
        return self._value

    @property
    def masked(self) -> str:
        return f"{self._parts.scheme}://{self._parts.hostname}/{MASK}"

    def __repr__(self) -> str:
        return f"SecretURL({self.masked!r})"

    def __str__(self) -> str:
        return self.masked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretURL) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def _replacements(self) -> list[tuple[str, str]]:
        """Every substring that would give the secret away, longest first, with its stand-in."""
        parts = self._parts
        path_query = parts.path + (f"?{parts.query}" if parts.query else "")
        pairs = {
            self._value: self.masked,
            path_query: f"/{MASK}" if path_query.startswith("/") else MASK,
            parts.path.lstrip("/"): MASK,
            parts.query: MASK,
            parts.password or "": MASK,
            parts.username or "": MASK,
        }
        return sorted(((p, r) for p, r in pairs.items() if len(p) >= 4), key=lambda pr: -len(pr[0]))

    def redact(self, text: str) -> str:
        """`text` with the URL, its path and its query replaced by the mask."""
        for part, replacement in self._replacements():
            text = text.replace(part, replacement)
        return text


class _RedactingFilter(logging.Filter):
    def __init__(self, secret: SecretURL) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._secret.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


@contextlib.contextmanager
def redacted_logs(secret: SecretURL) -> Iterator[None]:
    """Rewrite log records of the HTTP stack that mention the secret, for the duration."""
    guard = _RedactingFilter(secret)
    loggers = [logging.getLogger(name) for name in _URL_LOGGERS]
    for logger in loggers:
        logger.addFilter(guard)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(guard)
