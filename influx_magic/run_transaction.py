"""A pipeline run commits all or nothing: a pending state between blocks, one rename to commit.

The loader starts a run (`start_run`): it records which committed state the run starts from and
the run's detector configuration in `<state dir>/pending/current.json`. Later blocks continue it
(`current_run`): the detector and the checker never touch the committed state file, they keep a
*pending* state (`FleetState.to_bytes`) under `<state dir>/pending/<run>.state`, and the
exporter, after its writes to InfluxDB succeeded, renames that file over the committed one (one
atomic rename: detector, episodes and watermark move together). A run that fails anywhere leaves
the committed state as it was, so the next run reads the same rows again (from the same
watermark) into the same models: no point is learned twice, nothing is lost. Alerts a failed run
already sent are not sent again: episode ids are a function of the data, and the alert ledger
remembers them.

Mage hands DataFrames between blocks as Parquet and other values as JSON (bytes do not
survive), which is why the pending state travels as a file and only frames travel through Mage.

A file lock on the state dir (`influx_magic.runlock`), taken by the loader and released by the
exporter, keeps a manual `mage run` and a scheduled run from overlapping; the second waits up to
`lock_timeout_seconds` (default 60) and then stops with a message naming the holder. A block
that fails inside `with run:` lets go of the lock at once, and the commit also checks that the
committed state is still the one the run started from.

With FLEETWATCH_SHARDS > 1 all of this lives in the run's shard's folder (`influx_magic.shards`);
with FLEETWATCH_STATE_DIR at a URL the loader pulls the shard's committed objects into a local
mirror and the commit is a conditional PUT (`influx_magic.object_state`).

The state file depends on the detector configuration: a run with other runtime variables keeps
its own models, watermark and episodes in its own file instead of refusing the saved ones or
overwriting them.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from fleetwatch.detector import DetectorConfig
from fleetwatch.state import FleetState, StateError
from influx_magic import state_file
from influx_magic.alerts import Alert, SlackWebhookNotifier
from influx_magic.influx import read_since
from influx_magic.object_state import StaleStateError
from influx_magic.run_context import MageRun, PipelineSettings, RunVariables
from influx_magic.runlock import acquire_run_lock, release_run_lock
from influx_magic.shards import LAYOUT_FILE, ShardLayoutError, check_layout
from magic_common.atomic import fsync_dir, write_atomically

ONE_NS = pd.Timedelta(1, unit="ns")
LATENESS = timedelta(seconds=30)  # Telegraf flushes every ~10 s with jitter: up to ~15 s late
PENDING_DIR = "pending"
CURRENT_RUN = "current.json"


class PipelineError(RuntimeError):
    """A run cannot go on; the message says why and what happens next."""


def state_path(state_dir: Path, config: DetectorConfig) -> Path:
    """The committed state for a configuration (the default one has the plain name)."""
    name = Path(state_file.FILENAME)
    if config == DetectorConfig():
        return state_dir / name
    digest = hashlib.sha256(config.describe().encode()).hexdigest()[:10]
    return state_dir / f"{name.stem}-{digest}{name.suffix}"


def alert_files(state_dir: Path) -> list[Path]:
    """The alert ledger and outbox of a shard (`influx_magic.alerts.store`)."""
    folder = state_dir / "alerts" / SlackWebhookNotifier.name
    return [folder / "ledger.json", folder / "outbox.json"]


def file_digest(path: Path) -> str | None:
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class RunRecord:
    """The run in progress, as the loader started it (`pending/current.json`)."""

    key: str
    state_file: str
    base_digest: str | None
    since: str
    config: dict[str, Any]
    lock_timeout: float
    describe: str
    until: str | None = None  # the read's exclusive end: the fleet's data time it reached
    latest: str | None = None  # the newest point of the fleet when the run read


@dataclass
class Run:
    """One pipeline run: its settings, configuration and pending files. `with run:` holds the
    state dir's run lock for the block and lets go of it when the block fails."""

    settings: PipelineSettings
    config: DetectorConfig
    record: RunRecord
    mage: MageRun

    def __enter__(self) -> Run:
        acquire_run_lock(
            self.settings.state_dir, self.record.lock_timeout, what=self.record.describe
        )
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            release_run_lock(self.settings.state_dir)

    @property
    def since(self) -> pd.Timestamp:
        """Where the loader reads from: the watermark minus `LATENESS`, or the lookback."""
        return pd.Timestamp(self.record.since)

    @property
    def until(self) -> pd.Timestamp | None:
        """Where the loader stopped reading (exclusive), None before it read or without data."""
        return None if self.record.until is None else pd.Timestamp(self.record.until)

    @property
    def clock(self) -> pd.Timestamp | None:
        """The data time the whole fleet reached in this run (the last instant read): every
        shard runs its episodes' clock to it, so silent machines time out alike."""
        return None if self.until is None else self.until - ONE_NS

    def reached(self, until: pd.Timestamp | None, latest: pd.Timestamp | None) -> None:
        """Record where the loader stopped reading and the fleet's newest point then."""
        self.record = replace(
            self.record,
            until=None if until is None else until.isoformat(),
            latest=None if latest is None else latest.isoformat(),
        )
        write_atomically(self.pending_dir / CURRENT_RUN, json.dumps(asdict(self.record)).encode())

    def behind(self) -> str:
        """A note for the log when the run read less than there is (catching up)."""
        if self.record.latest is None or self.until is None:
            return ""
        latest = pd.Timestamp(self.record.latest)
        if self.until > latest:
            return ""
        return (
            f"; catching up: {latest - self.clock} behind the newest point "
            f"({latest.isoformat()}), FLEETWATCH_CATCHUP_MINUTES per run, the next run goes on"
        )

    @property
    def first(self) -> bool:
        """No run of this configuration has committed yet."""
        return self.record.base_digest is None

    @property
    def state_path(self) -> Path:
        return self.settings.state_dir / self.record.state_file

    @property
    def pending_dir(self) -> Path:
        return self.settings.state_dir / PENDING_DIR

    def committed_state(self) -> FleetState:
        """This configuration's committed models, episodes and watermark (or new ones)."""
        try:
            return state_file.load_or_new(self.state_path, self.config)
        except StateError as error:
            raise PipelineError(str(error)) from None

    def pending_state(self) -> FleetState:
        """The state the detector kept for this run."""
        path = self._pending("state")
        if not path.exists():
            raise PipelineError(
                f"no pending state for run {self.record.key}: detect_anomalies has not run in "
                "this run"
            )
        return FleetState.from_bytes(path.read_bytes(), source=path)

    def keep(self, state: FleetState, alerts: list[Alert] | None = None) -> None:
        """Keep `state` (and the run's alerts) pending until the exporter commits them."""
        write_atomically(self._pending("state"), state.to_bytes())
        if alerts is not None:
            data = [alert.to_json() for alert in alerts]
            write_atomically(self._pending("alerts.json"), json.dumps(data).encode())

    def alerts(self) -> list[Alert]:
        """The alerts the checker kept for this run (none when it has not run)."""
        path = self._pending("alerts.json")
        if not path.exists():
            return []
        return [Alert.from_json(item) for item in json.loads(path.read_text(encoding="utf-8"))]

    def commit(self) -> None:
        """Make the pending state the committed one, unless another run committed meanwhile;
        then let the next run in. With the state dir at a URL the commit is one conditional
        PUT (`influx_magic.object_state`): atomic, and refused by the store when stale."""
        pending = self._pending("state")
        if not pending.exists():
            raise PipelineError(f"no pending state for run {self.record.key}: nothing to commit")
        remote = self.settings.remote
        if remote is not None:
            try:
                remote.commit(self.state_path, pending.read_bytes(), self.record.base_digest)
            except StaleStateError as error:
                raise PipelineError(str(error)) from None
            pending.unlink()
        else:
            if file_digest(self.state_path) != self.record.base_digest:
                raise PipelineError(
                    f"{self.state_path} changed while this run was in progress (another run "
                    "committed); this run's results are dropped and the next run redoes them"
                )
            os.replace(pending, self.state_path)
            fsync_dir(self.state_path.parent)
        for leftover in (self._pending("alerts.json"), self.pending_dir / CURRENT_RUN):
            leftover.unlink(missing_ok=True)
        release_run_lock(self.settings.state_dir)

    def _pending(self, what: str) -> Path:
        return self.pending_dir / f"{self.record.key}.{what}"


def start_run(
    settings: PipelineSettings,
    variables: RunVariables,
    mage: MageRun,
    *,
    now: pd.Timestamp | None = None,
) -> Run:
    """Take the run lock and start a run of `variables.config` from the committed state:
    forget any earlier run's pending files, record this one. Reads from the committed
    watermark minus `LATENESS`, or `variables.lookback` before the first commit."""
    acquire_run_lock(settings.state_dir, variables.lock_timeout, what=mage.describe)
    try:
        path = state_path(settings.state_dir, variables.config)
        remote = settings.remote
        layout = settings.root / LAYOUT_FILE
        try:
            if remote is not None:  # the shard's committed objects, into the local mirror
                tags = remote.pull([layout, path, *alert_files(settings.state_dir)])
            check_layout(settings.root, settings.shard)
            if remote is not None:
                remote.push([layout])
            watermark = state_file.load_or_new(path, variables.config).watermark
        except (StateError, ShardLayoutError) as error:
            raise PipelineError(str(error)) from None
        since = read_since(watermark, lookback=variables.lookback, lateness=LATENESS, now=now)
        folder = settings.state_dir / PENDING_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():
            if stale.is_file():
                stale.unlink()
        record = RunRecord(
            key=uuid.uuid4().hex[:12],
            state_file=path.name,
            # The committed version the run starts from: the object's ETag when the state dir
            # is a URL, else the file's SHA-256.
            base_digest=tags[path] if remote is not None else file_digest(path),
            since=since.isoformat(),
            config=variables.config.to_json(),
            lock_timeout=variables.lock_timeout,
            describe=mage.describe,
        )
        write_atomically(folder / CURRENT_RUN, json.dumps(asdict(record)).encode())
    except BaseException:
        release_run_lock(settings.state_dir)
        raise
    return Run(settings, variables.config, record, mage)


def current_run(kwargs: Mapping[str, Any], settings: PipelineSettings | None = None) -> Run:
    """The run the loader started, for a later block (`kwargs`: the block's, for the run link)."""
    settings = (settings or PipelineSettings.from_env()).for_shard(kwargs.get("shard"))
    path = settings.state_dir / PENDING_DIR / CURRENT_RUN
    try:
        record = RunRecord(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise PipelineError(
            "no run in progress: run the pipeline from load_influx_data "
            "(the loader starts a run; later blocks continue it)"
        ) from None
    except (OSError, ValueError, TypeError) as error:
        raise PipelineError(f"cannot read {path}: {error}; run the whole pipeline") from None
    config = DetectorConfig.from_json(record.config)
    return Run(settings, config, record, MageRun.from_kwargs(kwargs, settings.mage_public_host))
