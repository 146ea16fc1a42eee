"""Request bodies read within limits: declared or chunked length, gzip members, time.

Every size limit is enforced while reading, never after: a chunk declaring 1 GiB is read in
64 KiB pieces and refused once the total passes the limit, and a gzip body is inflated
incrementally, so neither the compressed nor the decompressed body is ever held beyond the
limit. `Content-Length` must be plain digits (a negative or invalid one is a 400, as is a
request declaring both lengths, see `magic_common.http_guard.content_length`); a gzip body is decoded member after member, as `cat a.gz
b.gz` produces and gzip(1) reads, and anything that is not a whole gzip member (trailing
garbage, a missing trailer) is refused instead of silently cut off. The whole body must
arrive before the request's deadline.

>>> inflater = Gunzip(limit=100)
>>> import gzip; inflater.feed(gzip.compress(b"a\\n") + gzip.compress(b"b\\n")); inflater.finish()
b'a\\nb\\n'
>>> inflater = Gunzip(limit=100); inflater.feed(gzip.compress(b"a\\n") + b"junk"); inflater.finish()
Traceback (most recent call last):
...
localflux.influxdb.http_body.BadBody: error decoding gzip stream: data after gzip member 1 is not gzip (incorrect header check)
"""

from __future__ import annotations

import re
import socket
import time
import zlib
from typing import BinaryIO

PIECE = 65536
_MAX_LINE = 4096
_MAX_TRAILER_LINES = 64
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}\Z")


class BadBody(ValueError):
    """The body cannot be read as framed (400); the connection cannot carry another request."""


class TooLarge(Exception):
    """The body, compressed or decompressed, is over the limit (413)."""


class TooSlow(Exception):
    """The body did not arrive within the request's time limit (408)."""


class Gunzip:
    """Inflates gzip members one after another, refusing output beyond `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.members = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._fed = False

    def feed(self, data: bytes) -> None:
        while data:
            if self._inflater.eof:
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._fed = True
            try:
                out = self._inflater.decompress(data, self.limit - self._size + 1)
            except zlib.error as error:
                if self.members:
                    raise BadBody(
                        f"error decoding gzip stream: data after gzip member {self.members} "
                        f"is not gzip ({str(error).split(': ')[-1]})"
                    ) from None
                raise BadBody(f"error decoding gzip stream: {error}") from None
            self._size += len(out)
            if self._size > self.limit:
                raise TooLarge()
            self._parts.append(out)
            if self._inflater.eof:
                self.members += 1
                data = self._inflater.unused_data
            else:
                data = self._inflater.unconsumed_tail

    def finish(self) -> bytes:
        if self._fed and not self._inflater.eof:
            raise BadBody("error decoding gzip stream: it ends inside a member (no gzip trailer)")
        return b"".join(self._parts)


class BodyReader:
    """Reads one request's body from `rfile` (the connection's buffered reader), piece by
    piece, so that reading can stop at a limit and a later `drain` can go on from there."""

    def __init__(
        self,
        rfile: BinaryIO,
        sock: socket.socket,
        *,
        length: int | None,
        chunked: bool,
        deadline: float,
    ) -> None:
        self.rfile = rfile
        self.sock = sock
        self.chunked = chunked
        self.deadline = deadline
        self._left = 0 if chunked else length or 0  # bytes left in the body or chunk
        self._in_chunk = False
        self._done = False

    def read(self, limit: int, gzip: bool) -> bytes:
        """The body (inflated when `gzip`); raises TooLarge, BadBody or TooSlow."""
        if not self.chunked and self._left > limit:
            raise TooLarge()
        gunzip = Gunzip(limit) if gzip else None
        parts: list[bytes] = []
        size = 0
        while (piece := self._next()) is not None:
            size += len(piece)
            if size > limit:
                raise TooLarge()
            if gunzip is not None:
                gunzip.feed(piece)
            else:
                parts.append(piece)
        return gunzip.finish() if gunzip is not None else b"".join(parts)

    def drain(self, limit: int) -> bool:
        """Read and drop what is left of the body, up to `limit` bytes; False if that was
        not all of it (or it was malformed or too slow): the connection must then close."""
        if not self.chunked and self._left > limit:
            return False
        dropped = 0
        try:
            while (piece := self._next()) is not None:
                dropped += len(piece)
                if dropped > limit:
                    return False
        except (BadBody, TooSlow, OSError):
            return False
        return True

    def _next(self) -> bytes | None:
        """The next piece of the body (at most PIECE bytes), or None at its end."""
        if self._done:
            return None
        if self.chunked and not self._left:
            if self._in_chunk and self._line().strip() != b"":
                raise BadBody("malformed chunked request body: no line end after a chunk")
            size_text = self._line().split(b";", 1)[0].strip()
            if not _HEX.match(size_text):
                raise BadBody("malformed chunked request body")
            self._left = int(size_text, 16)
            self._in_chunk = True
            if not self._left:
                self._trailer()
        if not self._left:
            self._done = True
            return None
        piece = self._read(min(self._left, PIECE))
        if not piece:
            raise BadBody("the body ended before its declared length")
        self._left -= len(piece)
        return piece

    def _trailer(self) -> None:
        for _ in range(_MAX_TRAILER_LINES):
            if self._line().strip() == b"":
                return
        raise BadBody("malformed chunked request body: endless trailer")

    def _line(self) -> bytes:
        self._arm()
        try:
            line = self.rfile.readline(_MAX_LINE)
        except TimeoutError:
            raise TooSlow() from None
        if not line.endswith(b"\n"):
            raise BadBody("malformed chunked request body")
        return line

    def _read(self, count: int) -> bytes:
        self._arm()
        try:
            return self.rfile.read1(count)  # type: ignore[attr-defined]
        except TimeoutError:
            raise TooSlow() from None

    def _arm(self) -> None:
        """Let the next socket read wait only as long as the request has left."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TooSlow()
        self.sock.settimeout(left)
