"""The alert ledger (what was delivered) and outbox (what still has to be), as files.

Both are small JSON files in the state dir, rewritten whole and atomically (temp file, fsync,
rename, fsync of the directory): a crash or a full disk leaves the previous version, never a
torn one. A file that exists but cannot be read is an error naming the file, not an empty
ledger: starting over silently would re-send every alert still in the outbox window, or lose the
outbox.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> ledger = Ledger(folder / "ledger.json")
>>> ledger.add(["ep-1:opened"])
>>> "ep-1:opened" in Ledger(folder / "ledger.json")
True
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from magic_common.atomic import write_atomically

FORMAT_VERSION = 1


class StoreError(RuntimeError):
    """A ledger or outbox file that cannot be read; says which and what to do."""


def atomic_write_json(path: Path, data: Any) -> None:
    """Replace `path` with `data` as JSON so that readers see the old or the new file, whole."""
    text = json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True)
    write_atomically(path, text.encode("utf-8"))


def _read(path: Path, what: str, key: str) -> Any:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != FORMAT_VERSION or key not in data:
            raise ValueError(f"expected version {FORMAT_VERSION} with {key!r}")
        return data[key]
    except (OSError, ValueError, AttributeError) as error:
        raise StoreError(
            f"cannot read the alert {what} {path}: {error}. Fix or move the file aside; "
            f"moving it loses the record of which alerts were "
            f"{'delivered (they may be sent again)' if what == 'ledger' else 'still to send'}."
        ) from None


class Ledger:
    """Idempotency keys already delivered, with when; persisted on every change.

    Keys older than `retention_days` are dropped on save: episodes are announced within a run
    or two of happening, so a key that old will not come back, and the file stays small.
    """

    def __init__(self, path: Path, *, retention_days: float = 90.0) -> None:
        self.path = path
        self.retention = retention_days * 86400.0
        self._delivered: dict[str, float] = dict(_read(path, "ledger", "delivered") or {})

    def __contains__(self, key: object) -> bool:
        return key in self._delivered

    def __len__(self) -> int:
        return len(self._delivered)

    def delivered(self) -> dict[str, float]:
        """Every delivered key with when (a copy), e.g. to move the ledger elsewhere."""
        return dict(self._delivered)

    def add(self, keys: Iterable[str], *, now: float | None = None) -> None:
        moment = time.time() if now is None else now
        for key in keys:
            self._delivered.setdefault(key, moment)
        cutoff = moment - self.retention
        self._delivered = {k: t for k, t in self._delivered.items() if t >= cutoff}
        atomic_write_json(self.path, {"version": FORMAT_VERSION, "delivered": self._delivered})


@dataclass
class PendingMessage:
    """A rendered message waiting for delivery, and the event keys it announces."""

    key: str
    covers: tuple[str, ...]
    payload: dict[str, Any]
    happened_at: float | None = None  # epoch seconds (data time) of the oldest event it covers
    queued_at: float = field(default_factory=time.time)
    attempts: int = 0
    last_error: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingMessage:
        return cls(**{**data, "covers": tuple(data["covers"])})


class Outbox:
    """Messages in the order they were queued; the next run sends these first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = _read(path, "outbox", "messages") or []
        try:
            self._messages = [PendingMessage.from_json(item) for item in raw]
        except (TypeError, KeyError) as error:
            raise StoreError(f"cannot read the alert outbox {path}: bad entry ({error})") from None

    def __iter__(self) -> Iterator[PendingMessage]:
        return iter(list(self._messages))

    def __len__(self) -> int:
        return len(self._messages)

    def covered_keys(self) -> set[str]:
        return {key for message in self._messages for key in message.covers}

    def add(self, messages: Iterable[PendingMessage]) -> None:
        known = {m.key for m in self._messages}
        new = [m for m in messages if m.key not in known]
        if new:
            self._messages += new
            self.save()

    def remove(self, key: str) -> None:
        self._messages = [m for m in self._messages if m.key != key]
        self.save()

    def save(self) -> None:
        messages = [{**asdict(m), "covers": list(m.covers)} for m in self._messages]
        atomic_write_json(self.path, {"version": FORMAT_VERSION, "messages": messages})
