"""Helpers for the inbox tests: a running inbox process, HTTP calls, a real PNG."""

from __future__ import annotations

import http.client
import json
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support import PYTHON, ManagedProcess


@dataclass
class Inbox:
    """A `python -m localflux inbox` process on a free port with its own data and plots dirs."""

    port: int
    data_dir: Path
    plots_dir: Path
    launch: Callable[..., ManagedProcess]  # the start_process fixture
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hook(self) -> str:
        return f"{self.url}/hook"

    def start(self) -> None:
        self.process = self.launch("inbox", self.command(), url=f"{self.url}/api/status")

    def restart(self) -> None:
        assert self.process is not None
        self.process.stop()
        self.start()

    def command(self) -> list[str]:
        return [
            PYTHON, "-m", "localflux", "inbox", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--plots-dir", str(self.plots_dir),
        ]  # fmt: skip

    def messages(self) -> list[dict]:
        status, body, _ = get(f"{self.url}/api/messages")
        assert status == 200, body
        return json.loads(body)


def post(url: str, body: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """POST raw bytes with exactly the given headers (urllib adds no Content-Type for bytes
    when one is given; without one it would add form-urlencoded, so use `raw_request` then)."""
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post_json(
    url: str, payload: object, headers: Mapping[str, str] | None = None
) -> tuple[int, str]:
    return post(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
    )


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace"), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace"), dict(error.headers)


def raw_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """A request sent exactly as written: no path normalisation, no added headers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def make_png(path: Path, width: int = 160, height: int = 80) -> bytes:
    """Write a real (decodable) RGB PNG with a gradient, so a browser can render it."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, 90, y * 255 // height)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return png
