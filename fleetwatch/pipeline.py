"""The glue behind the Mage blocks of `machine_anomaly_detection`: one call per block.

Each block builds a `RunContext` from its keyword arguments and calls one function here:

    load_influx_data       -> load_telemetry(ctx)            rows since the watermark
    transform_data         -> prepare_telemetry(frame, ctx)  unique_id, types, duplicates
    detect_anomalies       -> detect(frame, ctx)             scores; pending detector state
    check_anomalies        -> check(scored, ctx)             episodes, alerts, plots
    export_anomaly_scores  -> export(checked, ctx)           InfluxDB writes, then commit

A run either commits everything or nothing. The detector and the checker do not touch the
committed state file: they write a *pending* state (`FleetState.to_bytes`) under
`<state dir>/pending/`, keyed by the run the loader started, and the exporter, after its writes
to InfluxDB succeeded, renames that file over the committed one (one atomic rename: detector,
episodes and watermark move together). A run that fails anywhere leaves the committed state as
it was, so the next run reads the same rows again (from the same watermark) into the same
models: no point is learned twice, nothing is lost. Alerts a failed run already sent are not
sent again: episode ids are a function of the data, and the alert ledger remembers them.

Mage hands DataFrames between blocks as Parquet and other values as JSON (bytes do not
survive), which is why the pending state travels as a file and only frames travel through Mage.

A file lock on the state dir (`fleetwatch.runlock`), taken by the loader and released by the
exporter, keeps a manual `mage run` and a scheduled run from overlapping; the second waits up to
`lock_timeout_seconds` (default 60) and then stops with a message naming the holder. Every
function here releases the lock when it fails, and the commit also checks that the committed
state is still the one the run started from.

The state file depends on the detector configuration (`features`, `threshold`): a run with other
runtime variables keeps its own models, watermark and episodes in its own file instead of
refusing the saved ones or overwriting them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd
from slugify import slugify

from fleetwatch.alerts import AlertDelivery, SlackWebhookNotifier
from fleetwatch.atomic import fsync_dir, write_atomically
from fleetwatch.detector import DEFAULT_FEATURES, DetectorConfig
from fleetwatch.episodes import EpisodeEvent, episode_id
from fleetwatch.influx import (
    InfluxError,
    InfluxSettings,
    connect,
    load_machine_data,
    load_machine_history,
    read_since,
    write_episodes,
    write_scores,
)
from fleetwatch.plots import plot_path, plot_url, render_machine_plots
from fleetwatch.runlock import acquire_run_lock, release_run_lock
from fleetwatch.settings import int_setting, load_dotenv, path_setting, setting
from fleetwatch.state import FILENAME, FleetState, StateError

P = ParamSpec("P")
R = TypeVar("R")

LATENESS = timedelta(seconds=30)  # Telegraf flushes every ~10 s with jitter: up to ~15 s late
DEFAULT_LOOKBACK_MINUTES = 60.0
DEFAULT_LOCK_TIMEOUT = 60.0
PENDING_DIR = "pending"
CURRENT_RUN = "current.json"
TAGS = ("machineID", "provider")


class PipelineError(RuntimeError):
    """A run cannot go on; the message says why and what happens next."""


# --- the run's context ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """Everything a block needs, from Mage's keyword arguments and the environment."""

    config: DetectorConfig
    lookback: timedelta
    state_dir: Path
    output_dir: Path
    influx: InfluxSettings
    public_base_url: str
    digest_min: int
    plot_history: timedelta = timedelta(minutes=30)
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    run_url: str | None = None
    describe: str = "mage run"
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_kwargs(
        cls, kwargs: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> RunContext:
        """From a block's `**kwargs`: runtime variables `lookback_minutes`, `threshold`,
        `features` (and `lock_timeout_seconds`); Mage's `pipeline_run_id` when the scheduler
        or the API started the run (`mage run` has none, so its alerts carry no run link).

        >>> ctx = RunContext.from_kwargs({"threshold": "0.7", "features": "power, load"}, env={})
        >>> ctx.config.features, ctx.config.threshold, ctx.run_url
        (('load', 'power'), 0.7, None)
        >>> RunContext.from_kwargs({"pipeline_run_id": 7, "pipeline_uuid": "p"},
        ...     env={"MAGE_PUBLIC_HOST": "http://mage:6789/"}).run_url
        'http://mage:6789/pipelines/p/runs/7'
        """
        if env is None:
            load_dotenv()
            env = os.environ
        features = parse_features(kwargs.get("features"))
        threshold = _number(kwargs, "threshold", DetectorConfig().threshold)
        try:
            config = DetectorConfig(features=features, threshold=threshold)
        except ValueError as error:
            raise ValueError(f"runtime variable threshold: {error}") from None
        lookback = _number(kwargs, "lookback_minutes", DEFAULT_LOOKBACK_MINUTES)
        if lookback <= 0:
            raise ValueError(f"runtime variable lookback_minutes must be > 0, got {lookback:g}")
        run_id = kwargs.get("pipeline_run_id")
        run_url = None
        describe = "mage run (or the Mage editor)"
        if run_id is not None:
            pipeline = kwargs.get("pipeline_uuid") or "machine_anomaly_detection"
            run_url = f"{mage_public_host(env)}/pipelines/{pipeline}/runs/{run_id}"
            describe = f"Mage pipeline run {run_id} (trigger {kwargs.get('trigger_name', '?')})"
        history = int_setting("PLOT_HISTORY_MIN", env)
        if history < 0:
            raise ValueError(f"PLOT_HISTORY_MIN must be >= 0, got {history}")
        return cls(
            config=config,
            lookback=timedelta(minutes=lookback),
            state_dir=path_setting("FLEETWATCH_STATE_DIR", env),
            output_dir=path_setting("FLEETWATCH_OUTPUT_DIR", env),
            influx=InfluxSettings.from_env(env),
            public_base_url=setting("PUBLIC_BASE_URL", env),
            digest_min=int_setting("ALERT_DIGEST_MIN", env),
            plot_history=timedelta(minutes=history),
            lock_timeout=_number(kwargs, "lock_timeout_seconds", DEFAULT_LOCK_TIMEOUT),
            run_url=run_url,
            describe=describe,
            env=env,
        )

    @property
    def features(self) -> tuple[str, ...]:
        return self.config.features

    @property
    def state_path(self) -> Path:
        """The committed state for this configuration (the default one has the plain name)."""
        if self.config == DetectorConfig():
            return self.state_dir / FILENAME
        digest = hashlib.sha256(self.config.describe().encode()).hexdigest()[:10]
        return self.state_dir / f"{Path(FILENAME).stem}-{digest}{Path(FILENAME).suffix}"

    @property
    def pending_dir(self) -> Path:
        return self.state_dir / PENDING_DIR

    def hold_lock(self) -> None:
        """Take (or keep) the state dir's run lock for this process."""
        acquire_run_lock(self.state_dir, self.lock_timeout, what=self.describe)

    def release_lock(self) -> None:
        release_run_lock(self.state_dir)


def parse_features(value: Any) -> tuple[str, ...]:
    """Feature names from a list, a comma-separated string or a JSON list, in the detector's
    canonical order (so `power,load` and `load,power` are one configuration).

    >>> parse_features(None) == DEFAULT_FEATURES
    True
    >>> parse_features('["vibration", "load"]')
    ('load', 'vibration')
    >>> parse_features("load,,load")
    Traceback (most recent call last):
    ...
    ValueError: runtime variable features: 'load' is listed twice
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_FEATURES
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(f"runtime variable features: not a JSON list: {text!r}") from None
        else:
            value = text.split(",")
    if not isinstance(value, list | tuple):
        raise ValueError(f"runtime variable features: expected a list of names, got {value!r}")
    names = [str(name).strip() for name in value if str(name).strip()]
    if not names:
        raise ValueError("runtime variable features: no feature names given")
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"runtime variable features: {name!r} is listed twice")
    known = [name for name in DEFAULT_FEATURES if name in names]
    return tuple(known + sorted(set(names) - set(known)))


def _number(kwargs: Mapping[str, Any], name: str, default: float) -> float:
    value = kwargs.get(name)
    if value is None or value == "":
        return float(default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"runtime variable {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"runtime variable {name} must be finite, got {value!r}")
    return number


def mage_public_host(env: Mapping[str, str]) -> str:
    """Where people open Mage: Mage's own `MAGE_PUBLIC_HOST`, else this host on MAGE_PORT."""
    host = env.get("MAGE_PUBLIC_HOST") or f"http://127.0.0.1:{int_setting('MAGE_PORT', env)}"
    return host.rstrip("/")


def releases_lock_on_error(function: Callable[P, R]) -> Callable[P, R]:
    """A failing block lets the next run in at once instead of after the process ends."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except BaseException:
            ctx = next((a for a in [*args, *kwargs.values()] if isinstance(a, RunContext)), None)
            if ctx is not None:
                ctx.release_lock()
            raise

    return wrapper


# --- the pending run ------------------------------------------------------------------------


@dataclass
class PendingRun:
    """The run in progress, as the loader started it: its key and the committed state's digest.

    Blocks after the loader find the run here, not through Mage (which cannot pass bytes), so
    the detector's pending state is always the one the exporter commits.
    """

    key: str
    state_file: str
    base_digest: str | None
    since: str | None = None

    @staticmethod
    def begin(ctx: RunContext, since: pd.Timestamp | None) -> PendingRun:
        """Start a run: forget any earlier run's pending files, record this one."""
        folder = ctx.pending_dir
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():
            if stale.is_file():
                stale.unlink()
        run = PendingRun(
            key=uuid.uuid4().hex[:12],
            state_file=ctx.state_path.name,
            base_digest=file_digest(ctx.state_path),
            since=None if since is None else since.isoformat(),
        )
        write_atomically(folder / CURRENT_RUN, json.dumps(run.__dict__).encode())
        return run

    @staticmethod
    def current(ctx: RunContext) -> PendingRun:
        path = ctx.pending_dir / CURRENT_RUN
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            run = PendingRun(**data)
        except FileNotFoundError:
            raise PipelineError(
                "no run in progress: run the pipeline from load_influx_data "
                "(the loader starts a run; later blocks continue it)"
            ) from None
        except (OSError, ValueError, TypeError) as error:
            raise PipelineError(f"cannot read {path}: {error}; run the whole pipeline") from None
        if run.state_file != ctx.state_path.name:
            raise PipelineError(
                f"the run in progress was started for {run.state_file}, this block is configured "
                f"for {ctx.state_path.name}: run the whole pipeline with the same variables"
            )
        return run

    def state_path(self, ctx: RunContext) -> Path:
        return ctx.pending_dir / f"{self.key}.state"

    def events_path(self, ctx: RunContext) -> Path:
        return ctx.pending_dir / f"{self.key}.events.json"

    def save_state(self, ctx: RunContext, state: FleetState) -> None:
        write_atomically(self.state_path(ctx), state.to_bytes())

    def load_state(self, ctx: RunContext) -> FleetState:
        path = self.state_path(ctx)
        if not path.exists():
            raise PipelineError(
                f"no pending state for run {self.key}: detect_anomalies has not run in this run"
            )
        return FleetState.from_bytes(path.read_bytes(), source=path)

    def commit(self, ctx: RunContext) -> None:
        """Make the pending state the committed one, unless another run committed meanwhile."""
        pending = self.state_path(ctx)
        if not pending.exists():
            raise PipelineError(f"no pending state for run {self.key}: nothing to commit")
        if file_digest(ctx.state_path) != self.base_digest:
            raise PipelineError(
                f"{ctx.state_path} changed while this run was in progress (another run "
                "committed); this run's results are dropped and the next run redoes them"
            )
        os.replace(pending, ctx.state_path)
        fsync_dir(ctx.state_path.parent)
        for leftover in (self.events_path(ctx), ctx.pending_dir / CURRENT_RUN):
            leftover.unlink(missing_ok=True)


def load_state(ctx: RunContext) -> FleetState:
    """The committed state for the run's configuration, or a new one."""
    return FleetState.load_or_new(ctx.state_path, ctx.config)


def file_digest(path: Path) -> str | None:
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- 1. load_influx_data --------------------------------------------------------------------


@releases_lock_on_error
def load_telemetry(ctx: RunContext, *, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Telemetry since the committed watermark minus `LATENESS` (first run: `lookback`).

    Takes the run lock and starts the run. An InfluxDB that does not answer fails the run here,
    before anything changed.
    """
    ctx.hold_lock()
    try:
        watermark = load_state(ctx).watermark
    except StateError as error:
        raise PipelineError(str(error)) from None
    since = read_since(watermark, lookback=ctx.lookback, lateness=LATENESS, now=now)
    PendingRun.begin(ctx, since)
    with contextlib.closing(connect(ctx.influx)) as client:
        frame = load_machine_data(client, since=since, features=ctx.features)
    first = "first run, " if watermark is None else ""
    print(f"load_influx_data: {len(frame)} row(s) since {since.isoformat()} ({first}{ctx.influx})")
    return frame


# --- 2. transform_data ----------------------------------------------------------------------


def unique_ids(provider: pd.Series, machine: pd.Series) -> pd.Series:
    """`slugify(provider)-machineID`, the series key upstream used (slugified once per
    provider, not once per row).

    >>> unique_ids(pd.Series(["Nordhoff, Weiss & Partner"]), pd.Series(["machine2"])).tolist()
    ['nordhoff-weiss-partner-machine2']
    """
    slugs = {name: slugify(str(name)) for name in pd.unique(provider)}
    return provider.map(slugs) + "-" + machine.astype(str)


@releases_lock_on_error
def prepare_telemetry(frame: pd.DataFrame, ctx: RunContext) -> pd.DataFrame:
    """One row per machine and time with the features as floats, sorted by time and machine.

    A row without a usable time, machineID or provider, or without any finite feature value,
    is dropped and counted; a single missing value stays NaN (the detector carries the
    machine's last value forward). Of duplicate (machine, time) rows the last one is kept.
    """
    ctx.hold_lock()
    missing = [c for c in ["time", *TAGS] if c not in frame.columns]
    if missing:
        raise PipelineError(f"transform_data: the loaded frame lacks column(s) {missing}")
    data = frame.copy()
    data["time"] = pd.to_datetime(data["time"], utc=True, errors="coerce")
    for tag in TAGS:
        data[tag] = data[tag].astype("string").str.strip().replace("", pd.NA)
    for name in ctx.features:
        values = pd.to_numeric(data[name], errors="coerce") if name in data else np.nan
        data[name] = pd.Series(values, index=data.index, dtype="float64")
        data.loc[~np.isfinite(data[name]), name] = np.nan
    reasons = {
        "no time": data["time"].isna(),
        "no machineID": data["machineID"].isna(),
        "no provider": data["provider"].isna(),
        "no finite feature value": data[list(ctx.features)].isna().all(axis=1),
    }
    bad = pd.Series(False, index=data.index)
    dropped: dict[str, int] = {}
    for reason, mask in reasons.items():
        if count := int((mask & ~bad).sum()):
            dropped[reason] = count
        bad |= mask
    data = data[~bad].astype({tag: object for tag in TAGS})
    data["unique_id"] = unique_ids(data["provider"], data["machineID"]).astype(object)
    before = len(data)
    data = data.drop_duplicates(["unique_id", "time"], keep="last")
    if before > len(data):
        dropped["duplicate"] = before - len(data)
    columns = ["time", "machineID", "provider", "unique_id", *ctx.features]
    data = data.sort_values(["time", "unique_id"], kind="stable")[columns].reset_index(drop=True)
    summary = ", ".join(f"{n} {why}" for why, n in dropped.items()) or "none"
    print(
        f"transform_data: {len(data)} row(s) of {data['unique_id'].nunique()} machine(s); "
        f"dropped: {summary}"
    )
    return data


# --- 3. detect_anomalies --------------------------------------------------------------------


@releases_lock_on_error
def detect(frame: pd.DataFrame, ctx: RunContext) -> pd.DataFrame:
    """Score test-then-train with the committed models; the new models wait as pending state.

    Points at or before a machine's last scored time (the lateness re-read, or rows of a run
    that failed after this block) are marked `stale` and not learned again.
    """
    ctx.hold_lock()
    run = PendingRun.current(ctx)
    try:
        state = load_state(ctx)
    except StateError as error:
        raise PipelineError(str(error)) from None
    scored = state.detector.score_frame(frame)
    machines = state.extra.setdefault("machines", {})
    if len(frame):
        names = frame.drop_duplicates("unique_id", keep="last")
        for uid, machine, provider in names[["unique_id", *TAGS]].itertuples(index=False):
            machines[str(uid)] = [str(machine), str(provider)]
    run.save_state(ctx, state)
    counts = scored["status"].value_counts().to_dict() if len(scored) else {}
    print(
        f"detect_anomalies: {counts.get('scored', 0)} point(s) scored, "
        f"{int(scored['is_anomaly'].sum()) if len(scored) else 0} above the threshold "
        f"{ctx.config.threshold:g}; skipped: "
        f"{ {k: v for k, v in counts.items() if k != 'scored'} or 'none' }"
    )
    return scored


# --- 4. check_anomalies ---------------------------------------------------------------------


@releases_lock_on_error
def check(scored: pd.DataFrame, ctx: RunContext) -> pd.DataFrame:
    """Episodes from the flags; one alert when an episode opens and one when it resolves;
    one PNG per machine with anomalies or an episode. Returns the scored rows with their
    `episode_id` (None outside episodes).

    The alerts go out here (messages that fail wait in the outbox for the next run); the
    events are handed to the exporter, which writes them to `anomaly_episodes`.
    """
    ctx.hold_lock()
    run = PendingRun.current(ctx)
    state = run.load_state(ctx)
    open_before = {uid: e.episode_id for uid, e in state.episodes.open.items()}
    events = state.episodes.update(scored)
    checked = scored.copy()
    checked["episode_id"] = episode_ids(checked, open_before)
    identities = state.extra.get("machines", {})
    alerts = [alert_event(e, identities, ctx.config.threshold, ctx.config.driver) for e in events]
    run.save_state(ctx, state)
    write_atomically(run.events_path(ctx), json.dumps(alerts).encode())

    rows = checked[checked["status"] == "scored"] if len(checked) else checked
    spans = [a for a in alerts if a["kind"] == "resolved"] + [
        {"unique_id": uid, "start": pd.Timestamp(e.start, tz="UTC"), "end": None}
        for uid, e in state.episodes.open.items()
    ]
    present = set(rows["unique_id"]) if len(rows) else set()
    spans = [span for span in spans if span["unique_id"] in present]
    wanted = {span["unique_id"] for span in spans}
    if len(rows):
        wanted |= set(rows.loc[rows["is_anomaly"].astype(bool), "unique_id"])
    history, history_note = plot_history(ctx, rows, wanted)
    plot_rows = rows if len(rows) else _plot_columns(ctx)
    if history is not None:
        plot_rows = pd.concat([history, rows[history.columns]], ignore_index=True)
    plotted = render_machine_plots(
        plot_rows,
        ctx.output_dir,
        threshold=ctx.config.threshold,
        features=ctx.features,
        episodes=spans,
        machines=wanted,
    )
    urls = {
        uid: plot_url(path, ctx.output_dir, ctx.public_base_url)
        for uid in {a["unique_id"] for a in alerts}
        if (path := plot_path(ctx.output_dir, uid)).exists()
    }

    notifier = SlackWebhookNotifier.from_settings(ctx.env)
    if notifier is None:
        sent = "not sent (SLACK_WEBHOOK_URL is empty)" if alerts else "none"
    else:
        delivery = AlertDelivery(notifier, ctx.state_dir, digest_min=ctx.digest_min)
        report = delivery.run(alerts, plot_urls=urls, run_url=ctx.run_url)
        sent = (
            f"{len(report.sent)} sent, {len(report.already_delivered)} already delivered, "
            f"{report.outbox_left} message(s) waiting in the outbox"
        )
    kinds = ", ".join(f"{a['kind']} {a['unique_id']}" for a in alerts) or "none"
    print(
        f"check_anomalies: events: {kinds}; alerts: {sent}; {len(plotted)} plot(s)"
        f"{history_note}; open episodes: {len(state.episodes.open)}"
    )
    return checked


def _plot_columns(ctx: RunContext) -> pd.DataFrame:
    columns = ["time", "machineID", "unique_id", *ctx.features, "score", "is_anomaly"]
    return pd.DataFrame(columns=columns)


def plot_history(
    ctx: RunContext, rows: pd.DataFrame, machines: set[str]
) -> tuple[pd.DataFrame | None, str]:
    """What each plotted machine did in the `PLOT_HISTORY_MIN` before its first row of this
    run (its telemetry and stored scores, read back from InfluxDB), and a note for the log.

    A run holds a minute of data; an alert's plot should show how the fault began and what
    normal looked like. Best effort: a plot is not worth failing an alert for, so when InfluxDB
    cannot answer the plots show the run's rows alone (None), and the note says why.
    """
    if not machines or ctx.plot_history <= timedelta(0) or not len(rows):
        return None, ""
    columns = _plot_columns(ctx).columns
    mine = rows[rows["unique_id"].isin(machines)]
    firsts = mine.groupby("unique_id").agg(
        time=("time", "min"), machineID=("machineID", "first"), provider=("provider", "first")
    )
    frames = []
    try:
        with contextlib.closing(connect(ctx.influx)) as client:
            for uid, first in firsts.iterrows():
                until = pd.Timestamp(first["time"])
                history = load_machine_history(
                    client,
                    machine=str(first["machineID"]),
                    provider=str(first["provider"]),
                    since=until - ctx.plot_history,
                    until=until,
                    features=ctx.features,
                )
                history["unique_id"] = uid
                if len(history):
                    frames.append(history[columns])
    except InfluxError as error:
        return None, f" (without history: {error})"
    minutes = ctx.plot_history.total_seconds() / 60
    note = f" with {minutes:g} min of history"
    return (pd.concat(frames, ignore_index=True) if frames else None), note


def episode_ids(scored: pd.DataFrame, open_before: Mapping[str, str]) -> pd.Series:
    """The episode of each row (None outside episodes), named as `EpisodeTracker` names them:
    an episode open before the run goes on; a new one is named by its machine and first point;
    a row flagged `episode_start` while one is open starts a new one (a gap in the data).
    """
    ids = pd.Series(None, index=scored.index, dtype=object)
    if not len(scored):
        return ids
    rows = scored[scored["status"] == "scored"]
    involved = set(rows.loc[rows["in_episode"].astype(bool), "unique_id"])
    rows = rows[rows["unique_id"].isin(involved)].sort_values(["unique_id", "time"], kind="stable")
    times = pd.to_datetime(rows["time"], utc=True).astype("int64")
    current = dict(open_before)
    for index, uid, t, inside, start, end in zip(
        rows.index,
        rows["unique_id"].astype(str),
        times,
        rows["in_episode"].astype(bool),
        rows["episode_start"].astype(bool),
        rows["episode_end"].astype(bool),
        strict=True,
    ):
        if start or not inside:
            current.pop(uid, None)
        if not inside:
            continue
        ids[index] = current.setdefault(uid, episode_id(uid, int(t)))
        if end:
            del current[uid]
    return ids


def alert_event(
    event: EpisodeEvent,
    identities: Mapping[str, Sequence[str]],
    threshold: float,
    driver: str | None = "load",
) -> dict[str, Any]:
    """An episode event as the alert event mapping (JSON-ready, for the pending events file).

    The detector keys machines by unique_id; the machineID and provider come from the
    identities the detector recorded in the state (a machine that went silent has no rows in
    this run to take them from).
    """
    episode = event.episode
    machine, provider = ([*identities.get(episode.machine, [])] + [None, None])[:2]
    return {
        "machine_id": machine or episode.machine,
        "unique_id": episode.machine,
        "provider": provider,
        "episode_id": episode.episode_id,
        "kind": event.kind,
        "start": pd.Timestamp(episode.start, tz="UTC").isoformat(),
        "end": None if event.kind == "opened" else pd.Timestamp(episode.end, tz="UTC").isoformat(),
        "peak_score": float(episode.peak_score),
        "peak_values": {name: float(value) for name, value in episode.peak_values.items()},
        "top_features": [
            [name, _finite(episode.deviations.get(name))] for name in episode.top_features
        ],
        "moved": episode.describe(driver),
        "threshold": threshold,
    }


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


# --- 5. export_anomaly_scores ---------------------------------------------------------------


@releases_lock_on_error
def export(checked: pd.DataFrame, ctx: RunContext) -> dict[str, Any]:
    """Write scores and episode events to InfluxDB, then commit the run's state; a summary.

    Rows re-read because of the lateness allowance were not scored again and are not written
    again. Writes are idempotent (same tags and time replace the row), so a run redone after
    a failure here writes the same rows once more, harmlessly.
    """
    ctx.hold_lock()
    run = PendingRun.current(ctx)
    events_path = run.events_path(ctx)
    alerts: list[dict[str, Any]] = (
        json.loads(events_path.read_text(encoding="utf-8")) if events_path.exists() else []
    )
    rows = checked[checked["status"] == "scored"] if len(checked) else checked
    written = episodes = 0
    if len(rows) or alerts:
        with contextlib.closing(connect(ctx.influx)) as client:
            if len(rows):
                written = write_scores(
                    client, rows[["time", *TAGS, "score", "is_anomaly", "episode_id"]]
                )
            episodes = write_episodes(client, alerts)
    state = run.load_state(ctx)
    run.commit(ctx)
    ctx.release_lock()
    watermark = state.watermark
    summary = {
        "scores_written": written,
        "episode_events_written": episodes,
        "anomalous_points": int(rows["is_anomaly"].sum()) if len(rows) else 0,
        "events": [f"{a['kind']} {a['unique_id']}" for a in alerts],
        "watermark": None if watermark is None else watermark.isoformat(),
        "state": str(ctx.state_path),
    }
    print(
        f"export_anomaly_scores: {written} score(s), {episodes} episode event(s) written; "
        f"committed {ctx.state_path.name} at watermark {summary['watermark']}"
    )
    return summary


def run_all(kwargs: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """All five steps in one process, as `mage run` calls them (benchmarks, quick checks)."""
    ctx = RunContext.from_kwargs(kwargs, env)
    frame = prepare_telemetry(load_telemetry(ctx), ctx)
    return export(check(detect(frame, ctx), ctx), ctx)
