"""A pipeline run commits all or nothing, and a run left idle never blocks the next one.

The loader starts a run (`start_run`) and puts it in Mage's `context`: the dict the blocks of
one pipeline run share in one process (`run_pipeline_in_one_process: true`; Mage's editor keeps
one in its kernel too), where later blocks find it (`current_run`). The run remembers the
committed state it started from (a digest of the state file) and where the loader read from.
The detector and the checker keep their *pending* state (`FleetState` as bytes) in the run and
never touch the committed file; the exporter, once its writes to InfluxDB succeeded, commits: it
checks that the committed file is still the one the run started from and replaces it
atomically, so detector, episodes and watermark move together. A run that fails anywhere leaves
the committed state as it was: the next run reads the same rows again (from the same watermark)
into the same models, so no point is learned twice and nothing is lost. Alerts a failed run
already sent are not sent again: episode ids come from the data, and the alert ledger
remembers them.

Each block holds the state dir's lock (`influx_magic.runlock`) while it runs (`with run:`), so
two runs never interleave their blocks: a manual `mage run` waits for a scheduled one (up to
`lock_timeout_seconds`, 60) and then starts from what it committed. Between blocks the run keeps
the lock for `IDLE_RELEASE` seconds only: the blocks of a pipeline run follow each other within
that, but a block run on its own in Mage's editor (the loader, to look at its rows) lets go of
it soon after, and the schedule goes on. When such a run goes on later, its block takes the lock
again; if another run committed meanwhile, the detector (or the commit) stops it with a message
to start again from the loader.

The loader reads up to the newest point of the whole fleet (or FLEETWATCH_CATCHUP_MINUTES of
data when further behind) and records where it stopped: the data time every shard's episodes
reach (`Run.clock`). With FLEETWATCH_SHARDS > 1 all of this lives in the run's shard's folder
(`influx_magic.shards`); with FLEETWATCH_STATE_DIR at a URL the loader pulls the shard's
committed objects into a local mirror and the commit is a conditional PUT
(`influx_magic.object_state`).

The state file depends on the detector configuration: a run with other runtime variables keeps
its own models, watermark and episodes in its own file instead of refusing the saved ones or
overwriting them.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from fleetwatch.detector import DetectorConfig
from fleetwatch.episodes import Episode
from fleetwatch.state import FleetState, StateError, reset_hint
from influx_magic import state_file
from influx_magic.alerts import Alert, CheckAlert, SlackWebhookNotifier
from influx_magic.influx import read_since
from influx_magic.object_state import StaleStateError
from influx_magic.run_context import Configuration, MageRun, PipelineSettings, RunVariables
from influx_magic.runlock import RunLock
from influx_magic.shards import LAYOUT_FILE, ShardLayoutError, check_layout
from magic_common.atomic import write_atomically

ONE_NS = pd.Timedelta(1, unit="ns")
LATENESS = timedelta(seconds=30)  # Telegraf flushes every ~10 s with jitter: up to ~15 s late
CONTEXT_KEY = "influx_magic_run"
IDLE_RELEASE = 10.0  # seconds a run keeps the lock after a block, waiting for its next block


class PipelineError(RuntimeError):
    """A run cannot go on; the message says why and what happens next."""


def state_path(state_dir: Path, config: DetectorConfig) -> Path:
    """The committed state for a configuration (the default one has the plain name)."""
    name = Path(state_file.FILENAME)
    if config == DetectorConfig():
        return state_dir / name
    digest = hashlib.sha256(config.describe().encode()).hexdigest()[:10]
    return state_dir / f"{name.stem}-{digest}{name.suffix}"


@dataclass
class Run:
    """One pipeline run: where it reads from, what it started from, what it keeps pending."""

    settings: PipelineSettings
    configuration: Configuration
    mage: MageRun
    state_path: Path
    base_digest: str | None  # SHA-256 of the committed file the run started from
    since: pd.Timestamp
    lock_timeout: float
    base_tag: str | None = None  # with the state dir at a URL: the object's ETag then
    until: pd.Timestamp | None = None  # where the loader stopped reading (exclusive)
    latest: pd.Timestamp | None = None  # the fleet's newest point when the loader read
    key: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _pending: bytes | None = field(default=None, repr=False)
    _alerts: list[Alert | CheckAlert] = field(default_factory=list, repr=False)
    _episodes: list[Episode] = field(default_factory=list, repr=False)
    _lock: RunLock = field(init=False, repr=False)
    _idle: int = field(default=0, repr=False)  # the idle spell a timer may end (0: none)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _committed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self._lock = RunLock(self.settings.state_dir)

    def __enter__(self) -> Run:
        """A block of this run starts: hold the lock (taking it again after an idle spell)."""
        with self._guard:
            self._idle = 0
            if not self._lock.held:
                self._lock.acquire(self.lock_timeout, what=self.mage.describe)
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """The block ended: let go of the lock now if it failed or committed, else after
        `IDLE_RELEASE` seconds unless the next block comes first."""
        with self._guard:
            if kind is not None or self._committed:
                self._lock.release()
                return
            spell = self._idle = uuid.uuid4().int
            timer = threading.Timer(IDLE_RELEASE, self._let_go, args=(spell,))
            timer.daemon = True
            timer.start()

    def _let_go(self, spell: int) -> None:
        with self._guard:
            if self._idle == spell:  # no block has started since
                self._idle = 0
                self._lock.release()

    @property
    def config(self) -> DetectorConfig:
        """The detector configuration of this run."""
        return self.configuration.detector

    @property
    def first(self) -> bool:
        """No run of this configuration has committed yet."""
        return self.base_digest is None

    @property
    def clock(self) -> pd.Timestamp | None:
        """The data time the whole fleet reached in this run (the last instant read): every
        shard runs its episodes' clock to it, so silent machines time out alike."""
        return None if self.until is None else self.until - ONE_NS

    def reached(self, until: pd.Timestamp | None, latest: pd.Timestamp | None) -> None:
        """Record where the loader stopped reading and the fleet's newest point then."""
        self.until, self.latest = until, latest

    def behind(self) -> str:
        """A note for the log when the run read less than there is (catching up)."""
        if self.latest is None or self.until is None or self.until > self.latest:
            return ""
        return (
            f"; catching up: {self.latest - self.clock} behind the newest point "
            f"({self.latest.isoformat()}), FLEETWATCH_CATCHUP_MINUTES per run, the next run "
            "goes on"
        )

    def committed_state(self) -> FleetState:
        """The committed models, episodes and watermark the run started from (or new ones),
        its episodes following `ALERT_RECUR_GAP_MIN`. Stops the run when another run
        committed since the loader read (its rows would be judged against other models)."""
        data = self.state_path.read_bytes() if self.state_path.exists() else None
        digest = None if data is None else hashlib.sha256(data).hexdigest()
        if digest != self.base_digest:
            raise PipelineError(
                f"{self.state_path} changed since load_influx_data started this run (another "
                "run committed): run the pipeline again from load_influx_data"
            )
        state = (
            FleetState.new(self.config)
            if data is None
            else load(data, self.state_path, self.config)
        )
        state.episodes.recur_gap_seconds = self.settings.recur_gap.total_seconds()
        return state

    def keep(
        self,
        state: FleetState,
        alerts: list[Alert | CheckAlert] | None = None,
        episodes: list[Episode] | None = None,
    ) -> None:
        """Keep `state` (and the checker's alerts and changed episodes) for the exporter."""
        self._pending = state.to_bytes()
        if alerts is not None:
            self._alerts, self._episodes = list(alerts), list(episodes or [])

    def pending_state(self) -> FleetState:
        """A copy of the state the detector (or the checker) kept in this run."""
        if self._pending is None:
            raise PipelineError(
                f"no pending state in run {self.key}: run detect_anomalies after load_influx_data"
            )
        return FleetState.from_bytes(self._pending, source=f"run {self.key}")

    def alerts(self) -> list[Alert | CheckAlert]:
        """The alerts the checker kept (none when it has not run)."""
        return list(self._alerts)

    def episodes(self) -> list[Episode]:
        """The episodes the checker found changed (none when it has not run)."""
        return list(self._episodes)

    def commit(self) -> None:
        """Make the pending state the committed one, unless another run committed meanwhile
        (call it inside `with run:`; the lock goes when the block ends). With the state dir at
        a URL the commit is one conditional PUT (`influx_magic.object_state`): atomic, and
        refused by the store when stale."""
        if self._pending is None:
            raise PipelineError(f"no pending state in run {self.key}: nothing to commit")
        remote = self.settings.remote
        if remote is not None:
            try:
                remote.commit(self.state_path, self._pending, self.base_tag)
            except StaleStateError as error:
                raise PipelineError(str(error)) from None
        else:
            if file_digest(self.state_path) != self.base_digest:
                raise PipelineError(
                    f"{self.state_path} changed while this run was in progress (another run "
                    "committed); this run's results are dropped and the next run redoes them"
                )
            write_atomically(self.state_path, self._pending)
        self._committed = True


def load(data: bytes, path: Path, config: DetectorConfig) -> FleetState:
    """The state in `data` (read from `path`), which must be one for `config`."""
    try:
        state = FleetState.from_bytes(data, source=path)
    except StateError as error:
        raise PipelineError(str(error)) from None
    if state.detector.config != config:
        raise PipelineError(
            f"{path} holds models for another configuration:\n  saved:     "
            f"{state.detector.config.describe()}\n  requested: {config.describe()}\n"
            f"{reset_hint(path)}"
        )
    return state


def alert_files(state_dir: Path) -> list[Path]:
    """The alert ledger and outbox under a (shard's or experiment's) folder
    (`influx_magic.alerts.store`)."""
    folder = state_dir / "alerts" / SlackWebhookNotifier.name
    return [folder / "ledger.json", folder / "outbox.json"]


def file_digest(path: Path) -> str | None:
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_run(
    kwargs: Mapping[str, Any],
    settings: PipelineSettings,
    variables: RunVariables,
    *,
    now: pd.Timestamp | None = None,
) -> Run:
    """Start a run of `variables.config` from its committed state and put it in Mage's
    `context` for the later blocks; use it as `with start_run(...) as run:` (the lock is
    already taken, so the committed state cannot move under the loader). It reads from the
    committed watermark minus `LATENESS`, or `variables.lookback` before the first commit."""
    mage = MageRun.from_kwargs(kwargs, settings.mage_public_host)
    lock = RunLock(settings.state_dir).acquire(variables.lock_timeout, what=mage.describe)
    try:
        run = _begin(kwargs, settings, variables, mage, now)
    except BaseException:
        lock.release()
        raise
    run._lock = lock
    return run


def _begin(
    kwargs: Mapping[str, Any],
    settings: PipelineSettings,
    variables: RunVariables,
    mage: MageRun,
    now: pd.Timestamp | None,
) -> Run:
    config = variables.config
    path = state_path(settings.state_dir, config)
    remote = settings.remote
    layout = settings.root / LAYOUT_FILE
    alerts = alert_files(variables.configuration.alert_dir(settings.state_dir))
    try:
        tags = remote.pull([layout, path, *alerts]) if remote is not None else {}
        check_layout(settings.root, settings.shard)
        if remote is not None:
            remote.push([layout])
    except ShardLayoutError as error:
        raise PipelineError(str(error)) from None
    data = path.read_bytes() if path.exists() else None
    watermark = None if data is None else load(data, path, config).watermark
    run = Run(
        settings=settings,
        configuration=variables.configuration,
        mage=mage,
        state_path=path,
        base_digest=None if data is None else hashlib.sha256(data).hexdigest(),
        base_tag=tags.get(path),
        since=read_since(watermark, lookback=variables.lookback, lateness=LATENESS, now=now),
        lock_timeout=variables.lock_timeout,
    )
    shared = kwargs.get("context")
    if isinstance(shared, dict):
        shared[CONTEXT_KEY] = run
    return run


def current_run(kwargs: Mapping[str, Any]) -> Run:
    """The run load_influx_data started, from Mage's `context`; use it as
    `with current_run(kwargs) as run:`."""
    shared = kwargs.get("context")
    run = shared.get(CONTEXT_KEY) if isinstance(shared, dict) else None
    if not isinstance(run, Run):
        raise PipelineError(
            "no run in progress: run the pipeline from load_influx_data (the loader starts a "
            "run, later blocks continue it in Mage's `context`, which needs "
            "run_pipeline_in_one_process: true)"
        )
    return run
