"""FLEETWATCH_STATE_DIR as an object-store URL (`s3://bucket/prefix`, through fsspec).

Workers on different machines (Kubernetes pods, one per shard run) need state they can all
reach. The run still works on files: at its start the loader pulls the shard's committed
objects (the state file of the run's configuration, the alert ledger and outbox, `shards.json`)
into a local mirror (`<temp dir>/influx-magic-state/<hash of the URL>/`), and the run's own
files (the run lock) stay there. Three moments write back:

* the commit: the exporter writes the pending state over the committed object with a
  conditional PUT (`If-Match` the ETag the loader saw, `If-None-Match: *` when there was none).
  One PUT of one object is atomic, so readers see the old state or the new one, whole; and a
  writer whose state went stale (another run committed this shard meanwhile, e.g. a manual run
  on another machine) is refused by the store itself, and its results are dropped, as with a
  local state dir;
* the alerts: the ledger and outbox are written back right after delivery, so an alert
  delivered by a run that fails later is not sent again;
* the layout (`shards.json`), when a state dir is first used.

The mirror is a cache, never trusted across runs: a pod that disappears loses nothing that was
committed. The run lock is the local one (per machine); across machines, two runs of one shard
at once are caught by the conditional commit (Mage's `skip_if_previous_running` keeps scheduled
runs of one shard apart anyway). Credentials and endpoint come from the usual environment of the
fsspec backend (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL for S3-compatible stores such as MinIO).

>>> is_url("s3://bucket/state"), is_url("/var/lib/state"), is_url(".local/state")
(True, False, False)
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magic_common.atomic import write_atomically

MIRRORS = "influx-magic-state"
# One PUT up to this size (S3 allows 5 GiB), so the conditional header applies to the whole.
SINGLE_PUT_BYTES = 5 * 1024**3


class StaleStateError(RuntimeError):
    """The committed object changed since the run read it: another run committed."""


def is_url(value: str) -> bool:
    """An fsspec URL other than a plain local path (`file://` counts as local)."""
    return "://" in value and not value.startswith("file://")


@dataclass
class ObjectState:
    """A state dir in object storage, mirrored locally under `mirror`."""

    url: str
    mirror: Path
    fs: Any  # fsspec.AbstractFileSystem
    root: str  # the URL's path within `fs`

    @classmethod
    def open(cls, url: str, mirror_base: Path | None = None) -> ObjectState:
        import fsspec

        protocol = url.split("://", 1)[0]
        options: dict[str, Any] = {"skip_instance_cache": True}
        if protocol in ("s3", "s3a"):
            options["use_listings_cache"] = False
        fs, root = fsspec.core.url_to_fs(url, **options)
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        base = mirror_base or Path(tempfile.gettempdir()) / MIRRORS
        return cls(url.rstrip("/"), base / digest, fs, root.rstrip("/"))

    def remote(self, local: Path) -> str:
        """The object behind a path in the mirror."""
        relative = Path(local).resolve().relative_to(self.mirror.resolve())
        return f"{self.root}/{relative.as_posix()}"

    def describe(self, local: Path) -> str:
        return f"{self.url}/{Path(local).resolve().relative_to(self.mirror.resolve()).as_posix()}"

    def pull(self, paths: Iterable[Path]) -> dict[Path, str | None]:
        """Copy the committed objects into the mirror (removing mirror files whose object is
        gone); each path's ETag (None: no object)."""
        tags: dict[Path, str | None] = {}
        for path in paths:
            key = self.remote(path)
            try:
                info = self.fs.info(key)
            except FileNotFoundError:
                Path(path).unlink(missing_ok=True)
                tags[path] = None
                continue
            write_atomically(Path(path), self.fs.cat_file(key))
            tags[path] = _etag(info)
        return tags

    def etag(self, path: Path) -> str | None:
        try:
            return _etag(self.fs.info(self.remote(path)))
        except FileNotFoundError:
            return None

    def push(self, paths: Iterable[Path]) -> None:
        """Write mirror files back as they are (unconditionally)."""
        for path in paths:
            if Path(path).exists():
                self._put(self.remote(path), Path(path).read_bytes())

    def commit(self, path: Path, data: bytes, expected: str | None) -> None:
        """Replace the object behind `path` with `data` only if it is still the version
        `expected` (its ETag; None: there must be none), then update the mirror."""
        key = self.remote(path)
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            self._put(key, data, **condition)
        except (FileExistsError, OSError) as error:
            if isinstance(error, FileExistsError) or "pre-condition" in str(error).lower():
                raise StaleStateError(
                    f"{self.describe(path)} changed while this run was in progress (another "
                    "run committed); this run's results are dropped and the next run redoes them"
                ) from None
            raise
        write_atomically(Path(path), data)

    def _put(self, key: str, data: bytes, **condition: str) -> None:
        self.fs.pipe_file(key, data, chunksize=SINGLE_PUT_BYTES, **condition)


def _etag(info: dict[str, Any]) -> str | None:
    tag = info.get("ETag") or info.get("etag")
    return None if tag is None else str(tag)
