"""The moments two pipeline runs must not interleave: an advisory `flock` on `<state dir>/run.lock`.

Two runs of the same state dir (a manual `mage run` beside a scheduled one) may overlap; what
must not interleave is reading and writing the alert ledger and outbox, and the commit of the
state (`influx_magic.run_transaction` holds the lock for those moments only, never between
blocks). The lock is the kernel's (`fcntl.flock`), so it dies with its process — a crashed or
killed run never leaves a stale lock behind, and there is no pid file to clean up. The holder
writes its pid, host and start time into the file, so a run that has to wait can say who it
waited for; it waits up to `timeout` seconds, then gets `RunLockBusy`.

flock is reliable on local filesystems; keep the state dir off NFS.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> with RunLock(folder).hold(timeout=0) as lock:
...     lock.holder()["pid"] == os.getpid()
True
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

LOCK_NAME = "run.lock"


class RunLockBusy(RuntimeError):
    """Another process holds the run lock; the message names it."""

    def __init__(self, message: str, holder: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.holder = holder


class RunLock:
    """The run lock of one state dir."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self, timeout: float = 60.0, *, what: str = "", poll: float = 0.2) -> RunLock:
        """Take the lock, waiting up to `timeout` seconds (0: try once).

        `what` describes this run for whoever has to wait (e.g. "mage run" or a run id).
        """
        if self._file is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    file.close()
                    holder = self.holder()
                    raise RunLockBusy(_busy_message(self.path, holder, timeout), holder) from None
                time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        file.seek(0)
        file.truncate()
        json.dump(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
                "what": what or " ".join(sys.argv)[:200],
            },
            file,
        )
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        """Let the next run in; a no-op when not held."""
        if self._file is None:
            return
        file, self._file = self._file, None
        with contextlib.suppress(OSError):
            file.seek(0)
            file.truncate()
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)
        file.close()

    def holder(self) -> dict[str, Any] | None:
        """What the current holder wrote about itself, when readable."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @contextlib.contextmanager
    def hold(self, timeout: float = 60.0, *, what: str = "") -> Iterator[RunLock]:
        self.acquire(timeout, what=what)
        try:
            yield self
        finally:
            self.release()


def _busy_message(path: Path, holder: dict[str, Any] | None, timeout: float) -> str:
    if holder:
        who = f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"
        if holder.get("what"):
            who += f": {holder['what']}"
    else:
        who = "a process that has not written its pid yet"
    return (
        f"another pipeline run holds {path} ({who}); waited {timeout:g} s. "
        f"This run stops without changing any state; the next one will catch up."
    )
