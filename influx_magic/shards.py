"""Machines spread over N shards, each a pipeline run of its own with its own state.

The hash. A machine's series key is its pair of tags, trimmed of spaces:
`machineID + "/" + provider`. Its hash is the first 8 hex digits of the MD5 of that text in
UTF-8, read as a 32-bit number x, and its shard is `x * N >> 32`: shard k holds the contiguous
range of x from ceil(k * 2**32 / N). MD5, `btrim`, `concat` and `left` are DataFusion functions
that InfluxDB 3 (Core, Enterprise, Cloud) and localflux compute alike, so the hash is computed
in SQL: each shard's loader reads only its machines (`WHERE left(md5(...), 8) >= $shard_lo AND
... < $shard_hi`, bounds bound as parameters), and the same function in Python
(`series_hash`) places the models when re-partitioning. It is stable across processes,
machines and versions (no seeded hash); two spellings of one machine that differ only by
surrounding spaces land together.

The layout. With N = 1 (the default) nothing changes: the state dir holds the state, the run
lock and the alert ledger and outbox as before. With N > 1 shard k keeps all of
these in `<state dir>/shards-N/shard-k/`, so shards run in parallel without touching each other,
and `<state dir>/shards.json` records N. A run whose FLEETWATCH_SHARDS does not match the state
dir refuses to start and names the command that re-partitions:

    python -m influx_magic.shards repartition --to M     # from whatever N the state dir has
    python -m influx_magic.shards status

Re-partitioning takes every shard's run lock (refusing while a run holds one), merges each
state file's models across the old shards and splits them by the hash into the new ones
(`fleetwatch.partition`: no model is rebuilt, open episodes move with their machine), copies
the alert ledger (what was delivered) into every new shard, and puts every undelivered message
of the old outboxes into the new shard 0's outbox, where its next run sends it. The new layout
is written first and `shards.json` is switched last, so an interrupted re-partition leaves the
old layout in use and can simply be run again.

>>> shard_of("machine2", "Acme, Inc", 3), Shard(1, 3).bounds()
(2, ('55555556', 'aaaaaaab'))
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fleetwatch.partition import merge, take
from fleetwatch.state import FleetState
from influx_magic import state_file
from influx_magic.alerts.store import FORMAT_VERSION, Ledger, Outbox, atomic_write_json
from influx_magic.object_state import is_url
from influx_magic.runlock import RunLock, RunLockBusy
from influx_magic.settings import int_setting, load_dotenv, path_setting, setting
from magic_common.atomic import write_atomically

HEX_DIGITS = 8
SPACE = 1 << (4 * HEX_DIGITS)
MAX_SHARDS = 4096
LAYOUT_FILE = "shards.json"
HASH_SQL = f'left(md5(concat(btrim("machineID"), \'/\', btrim("provider"))), {HEX_DIGITS})'


class ShardLayoutError(RuntimeError):
    """The state dir is laid out for another number of shards; the message says what to do."""


def series_hash(machine: str, provider: str) -> int:
    """The 32-bit hash of a series key, as the SQL filter computes it.

    >>> hex(series_hash("machine2", "Acme, Inc"))
    '0xe300abc4'
    """
    key = f"{str(machine).strip(' ')}/{str(provider).strip(' ')}"
    return int(hashlib.md5(key.encode("utf-8")).hexdigest()[:HEX_DIGITS], 16)


def shard_of(machine: str, provider: str, count: int) -> int:
    """The shard (0..count-1) of a machine."""
    return (series_hash(machine, provider) * count) >> (4 * HEX_DIGITS)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`; `Shard(0, 1)` is the whole fleet (no filter)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"FLEETWATCH_SHARDS must be 1..{MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"runtime variable shard must be 0..{self.count - 1} "
                f"(FLEETWATCH_SHARDS={self.count}), got {self.index}"
            )

    @classmethod
    def from_run(cls, value: object, env: Mapping[str, str]) -> Shard:
        """From the runtime variable `shard` (None: 0) and FLEETWATCH_SHARDS."""
        count = int_setting("FLEETWATCH_SHARDS", env)
        if value is None or value == "":
            return cls(0, count)
        try:
            index = int(str(value))
        except ValueError:
            raise ValueError(f"runtime variable shard must be an integer, got {value!r}") from None
        return cls(index, count)

    @property
    def whole(self) -> bool:
        return self.count == 1

    def bounds(self) -> tuple[str, str | None]:
        """The shard's hash range as fixed-width lower-case hex (compared as text in SQL);
        None: no upper bound (the last shard)."""
        low = math.ceil(self.index * SPACE / self.count)
        high = math.ceil((self.index + 1) * SPACE / self.count)
        return f"{low:0{HEX_DIGITS}x}", None if high >= SPACE else f"{high:0{HEX_DIGITS}x}"

    def sql(self) -> str:
        """The WHERE conjuncts that keep this shard's machines ('' for the whole fleet)."""
        if self.whole:
            return ""
        low, high = self.bounds()
        text = f" AND {HASH_SQL} >= $shard_lo"
        return text + (f" AND {HASH_SQL} < $shard_hi" if high is not None else "")

    def params(self) -> dict[str, str]:
        if self.whole:
            return {}
        low, high = self.bounds()
        return {"shard_lo": low} | ({"shard_hi": high} if high is not None else {})

    def owns(self, machine: str, provider: str) -> bool:
        return self.whole or shard_of(machine, provider, self.count) == self.index

    def folder(self, root: Path) -> Path:
        """Where this shard keeps its state, lock, ledger and outbox."""
        return root if self.whole else root / f"shards-{self.count}" / f"shard-{self.index}"

    def describe(self) -> str:
        return "" if self.whole else f"shard {self.index} of {self.count}"


def layout(root: Path) -> int:
    """The number of shards the state dir is laid out for (1 without `shards.json`)."""
    path = root / LAYOUT_FILE
    if not path.exists():
        return 1
    try:
        count = int(json.loads(path.read_text(encoding="utf-8"))["shards"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ShardLayoutError(f"cannot read {path}: {error}; fix or restore it") from None
    return count


def check_layout(root: Path, shard: Shard) -> None:
    """Refuse to run a shard against a state dir laid out for another number of shards.

    A state dir with no state yet takes the configured number.
    """
    current = layout(root)
    if current == shard.count:
        return
    if not _holds_state(root, current):
        _write_layout(root, shard.count)
        return
    raise ShardLayoutError(
        f"{root} holds the state of {current} shard(s), but FLEETWATCH_SHARDS is "
        f"{shard.count}. Stop the schedule, then run `python -m influx_magic.shards "
        f"repartition --to {shard.count}` (keeps every model and undelivered alert), or set "
        f"FLEETWATCH_SHARDS={current} again. Nothing was changed."
    )


def _holds_state(root: Path, count: int) -> bool:
    return any(_state_files(Shard(i, count).folder(root)) for i in range(count))


def _state_files(folder: Path) -> list[Path]:
    stem, suffix = Path(state_file.FILENAME).stem, Path(state_file.FILENAME).suffix
    return sorted(folder.glob(f"{stem}*{suffix}")) if folder.is_dir() else []


def _write_layout(root: Path, count: int) -> None:
    if count == 1:
        (root / LAYOUT_FILE).unlink(missing_ok=True)
        return
    atomic_write_json(root / LAYOUT_FILE, {"shards": count})


# --- re-partitioning ------------------------------------------------------------------------


@dataclass
class RepartitionReport:
    before: int
    after: int
    machines: dict[str, int]  # per state file: machines moved
    outbox_messages: int

    def describe(self) -> str:
        files = ", ".join(f"{name}: {n} machine(s)" for name, n in self.machines.items())
        return (
            f"re-partitioned from {self.before} to {self.after} shard(s) ({files or 'no state'}; "
            f"{self.outbox_messages} undelivered message(s) kept in shard 0's outbox)"
        )


def repartition(root: Path, count: int, *, notifier: str = "slack") -> RepartitionReport:
    """Move every model, open episode, ledger entry and undelivered message from the state
    dir's current shards into `count` shards; see the module doc."""
    Shard(0, count)  # validates the number
    before = layout(root)
    if before == count:
        return RepartitionReport(before, count, {}, 0)
    old = [Shard(i, before) for i in range(before)]
    new = [Shard(i, count) for i in range(count)]
    with _all_locks([s.folder(root) for s in old]):
        staged: dict[Path, bytes] = {}
        moved: dict[str, int] = {}
        for name in sorted({path.name for s in old for path in _state_files(s.folder(root))}):
            parts = [
                state_file.load(s.folder(root) / name)
                for s in old
                if (s.folder(root) / name).exists()
            ]
            pieces = _split(merge(parts), count, name)
            staged.update(
                (s.folder(root) / name, piece.to_bytes())
                for s, piece in zip(new, pieces, strict=True)
            )
            moved[name] = sum(len(p.detector.machines) for p in pieces)
        delivered, waiting = _alerts(root, old, notifier)

        # The new layout, next to the old one (leftovers of an interrupted attempt go first).
        _clear(root, count)
        for path, data in staged.items():
            write_atomically(path, data)
        for shard in new:
            alerts = shard.folder(root) / "alerts" / notifier
            atomic_write_json(
                alerts / "ledger.json", {"version": FORMAT_VERSION, "delivered": delivered}
            )
            atomic_write_json(
                alerts / "outbox.json",
                {"version": FORMAT_VERSION, "messages": waiting if shard.index == 0 else []},
            )
        _write_layout(root, count)  # the switch: from here on the new layout is the state
        _clear(root, before)
    return RepartitionReport(before, count, moved, len(waiting))


def _split(whole: FleetState, count: int, name: str) -> list[FleetState]:
    """`whole`'s machines cut into the `count` shards their hash assigns them to."""
    identities = whole.extra.get("machines", {})
    unplaced = [key for key in whole.detector.machines if key not in identities]
    if unplaced:
        raise ShardLayoutError(
            f"{name}: machine(s) {unplaced[:5]} have no recorded machineID/provider, so their "
            "shard is unknown; nothing was changed"
        )
    groups: list[list[str]] = [[] for _ in range(count)]
    for key in whole.detector.machines:
        machine, provider = identities[key][:2]
        groups[shard_of(machine, provider, count)].append(key)
    pieces = [take(whole, keys, counters=i == 0) for i, keys in enumerate(groups)]
    if sorted(k for p in pieces for k in p.detector.machines) != sorted(whole.detector.machines):
        raise ShardLayoutError(f"{name}: machines were lost in the split; nothing was changed")
    return pieces


def _alerts(root: Path, shards: Sequence[Shard], notifier: str) -> tuple[dict, list[dict]]:
    """Every shard's ledger entries (merged) and undelivered messages (by key, once)."""
    delivered: dict[str, float] = {}
    waiting: dict[str, dict] = {}
    for shard in shards:
        folder = shard.folder(root) / "alerts" / notifier
        delivered.update(Ledger(folder / "ledger.json").delivered())
        for message in Outbox(folder / "outbox.json"):
            waiting.setdefault(message.key, {**asdict(message), "covers": list(message.covers)})
    return delivered, list(waiting.values())


def _clear(root: Path, count: int) -> None:
    """Remove the files of the `count`-shard layout (state files, pending runs, alert stores);
    the flat layout keeps its run lock and the other layouts' folders."""
    if count > 1:
        shutil.rmtree(root / f"shards-{count}", ignore_errors=True)
        return
    for path in _state_files(root):
        path.unlink()
    for name in ("pending", "alerts"):
        shutil.rmtree(root / name, ignore_errors=True)


@contextlib.contextmanager
def _all_locks(folders: Sequence[Path]) -> Iterator[None]:
    """Hold every folder's run lock (no waiting: a running shard makes this refuse)."""
    held: list[RunLock] = []
    try:
        for folder in folders:
            try:
                held.append(RunLock(folder).acquire(0, what="influx_magic.shards repartition"))
            except RunLockBusy as busy:
                raise ShardLayoutError(
                    f"a pipeline run is in progress in {folder} ({busy.holder}); stop the "
                    "schedule and try again. Nothing was changed."
                ) from None
        yield
    finally:
        for lock in held:
            lock.release()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m influx_magic.shards", description=__doc__)
    parser.add_argument("--state-dir", help="a folder (default: FLEETWATCH_STATE_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="how many shards the state dir holds, machines in each")
    again = commands.add_parser("repartition", help="move every model into --to shards")
    again.add_argument("--to", type=int, required=True)
    args = parser.parse_args(argv)
    load_dotenv()
    location = args.state_dir or setting("FLEETWATCH_STATE_DIR")
    if is_url(location):
        print(
            f"error: {location} is an object-store URL; re-partition a local copy: stop the "
            "schedule, copy it to a folder (e.g. `aws s3 sync`), run this command with "
            "--state-dir <folder>, copy the folder back (deleting what it no longer has).",
            file=sys.stderr,
        )
        return 2
    root = Path(args.state_dir) if args.state_dir else path_setting("FLEETWATCH_STATE_DIR")
    try:
        if args.command == "status":
            count = layout(root)
            print(f"{root}: {count} shard(s)")
            for shard in (Shard(i, count) for i in range(count)):
                for path in _state_files(shard.folder(root)):
                    machines = len(FleetState.from_bytes(path.read_bytes()).detector.machines)
                    print(f"  shard {shard.index}: {path.name}: {machines} machine(s)")
            return 0
        print(repartition(root, args.to).describe())
        return 0
    except (ShardLayoutError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
