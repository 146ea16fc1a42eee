"""Where the pipeline asks the operator side, one call per step:

- `detect_anomalies`: `machine_rules(...)`, the per-machine rules (`machines.yaml` threshold
  and persistence, false-alarm raises) the detector applies where it flags points;
- `check_anomalies`: `screen_alerts(...)`, events in; events to send, muted and acknowledged
  out (`influx_magic.operations.alert_gate`);
- `export_anomaly_scores`: `episode_statuses(...)`, status `muted` for the run's muted
  episodes, and `write_feedback(...)`, operator actions not yet in InfluxDB.

Every hook takes the state dir's root (`PipelineSettings.root`), not the run's shard's folder:
the operator state is one for the whole fleet (`influx_magic.operations.production_state`).

Rules depend on the run's data time (a false alarm's raise fades with it), not on the clock,
so a run redone after a failure flags the same points.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from fleetwatch.episodes import Episode
from fleetwatch.machine_rules import MachineRule
from fleetwatch.state import FleetState
from influx_magic.influx import InfluxSettings
from influx_magic.operations.alert_gate import MUTED, Screened, decide, screen
from influx_magic.operations.feedback_table import try_flush
from influx_magic.operations.machine_names import MachineIdentity, identities_from_state
from influx_magic.operations.machines_file import MachinesFile
from influx_magic.operations.operator_store import OperatorStore
from influx_magic.operations.policy import OperatorPolicy
from influx_magic.run_context import Configuration
from influx_magic.settings import path_setting


def machine_rules(
    state: FleetState, frame: pd.DataFrame, state_dir: Any, env: Mapping[str, str]
) -> dict[str, MachineRule]:
    """The rules for this run's machines (those in `frame` and those the state knows), at the
    frame's latest data time."""
    policy = OperatorPolicy.load(state_dir, env)
    machines = {m.unique_id: m for m in identities_from_state(state.extra.get("machines", {}))}
    if len(frame):
        names = frame.drop_duplicates("unique_id", keep="last")
        for uid, machine, provider in names[["unique_id", "machineID", "provider"]].itertuples(
            index=False
        ):
            machines[str(uid)] = MachineIdentity(str(uid), str(machine), str(provider))
    now = _data_time(frame, state)
    return policy.rules(machines.values(), now, state.detector.config.threshold)


def _data_time(frame: pd.DataFrame, state: FleetState) -> datetime:
    if len(frame):
        latest = pd.Timestamp(pd.to_datetime(frame["time"], utc=True).max())
        return latest.to_pydatetime()
    if state.watermark is not None:
        return state.watermark.to_pydatetime()
    return datetime.now(UTC)


def screen_alerts(
    alerts: Iterable[Any], state_dir: Any, env: Mapping[str, str], configuration: Configuration
) -> Screened:
    """Which of the run's alerts go out (see `alert_gate`). A production run records every
    episode (for `ack` / `false-alarm`); an experiment (`configuration.experiment`) is screened
    against the same mutes without recording anything."""
    machines_file = MachinesFile.load(path_setting("MACHINES_FILE", env))
    store = OperatorStore(state_dir)
    if configuration.experiment:
        return decide(alerts, copy.deepcopy(store.read()), machines_file)
    return screen(alerts, store, machines_file)


def episode_statuses(episodes: Iterable[Episode], state_dir: Any) -> dict[str, str]:
    """Episode id -> `muted` for the run's episodes the gate muted (for `anomaly_episodes`)."""
    records = OperatorStore(state_dir).read().episodes
    return {
        e.episode_id: MUTED
        for e in episodes
        if (record := records.get(e.episode_id)) is not None and record.muted
    }


def write_feedback(state_dir: Any, influx: InfluxSettings) -> str:
    """Operator actions not yet in `anomaly_feedback`, written now; a note for the log."""
    return try_flush(OperatorStore(state_dir), influx)
