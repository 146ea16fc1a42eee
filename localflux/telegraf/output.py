"""The bridge's `outputs.influxdb_v2`: POST line protocol to `/api/v2/write`, as Telegraf does.

`write_batch` sorts the answer into what the bridge should do with the points:
- written (2xx);
- retry later, keeping every point: InfluxDB unreachable, 5xx, 429/408, and also 401/403/404,
  which mean the bridge is misconfigured (token, database), not that the data is bad;
- some lines rejected (400/422, or 413 for a single line): the batch is split in halves until
  each bad line stands alone, so one bad point never costs its neighbours.
"""

from __future__ import annotations

import gzip
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlencode

from localflux.telegraf.config import InfluxOutput

log = logging.getLogger("localflux.telegraf.bridge")

_RETRY_STATUSES = {401, 403, 404, 408, 429}


class WriteUnavailable(Exception):
    """InfluxDB cannot take writes now; try the same points again later."""


@dataclass
class BatchResult:
    """How many lines were written, and the lines InfluxDB refused with its reason."""

    written: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


class InfluxV2Writer:
    def __init__(self, output: InfluxOutput) -> None:
        base = output.urls[0].rstrip("/")
        query = urlencode({"bucket": output.bucket, "org": output.organization, "precision": "ns"})
        self.url = f"{base}/api/v2/write?{query}"
        self.output = output
        self.headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "User-Agent": output.user_agent,
            **output.http_headers,
        }
        if output.token:
            self.headers["Authorization"] = f"Token {output.token}"
        if output.content_encoding == "gzip":
            self.headers["Content-Encoding"] = "gzip"

    def _post(self, lines: list[str]) -> tuple[int, str]:
        body = ("\n".join(lines) + "\n").encode("utf-8")
        if self.output.content_encoding == "gzip":
            body = gzip.compress(body, compresslevel=1)
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.output.timeout) as response:
                return response.status, ""
        except urllib.error.HTTPError as error:
            detail = error.read(2000).decode("utf-8", "replace")
            return error.code, detail
        except (urllib.error.URLError, OSError) as error:
            raise WriteUnavailable(f"{self.url}: {getattr(error, 'reason', error)}") from None

    def write_batch(self, lines: list[str]) -> BatchResult:
        """Write `lines`; raises WriteUnavailable (nothing written by this call) to retry."""
        result = BatchResult()
        self._write(lines, result)
        return result

    def _write(self, lines: list[str], result: BatchResult) -> None:
        status, detail = self._post(lines)
        if 200 <= status < 300:
            result.written += len(lines)
            return
        if status >= 500 or status in _RETRY_STATUSES:
            raise WriteUnavailable(f"HTTP {status} from {self.url}: {detail.strip()[:300]}")
        # 400, 413, 422 and other client errors: something in these lines is refused.
        if len(lines) == 1:
            result.rejected.append((lines[0], f"HTTP {status}: {detail.strip()[:300]}"))
            return
        middle = len(lines) // 2
        self._write(lines[:middle], result)
        self._write(lines[middle:], result)
