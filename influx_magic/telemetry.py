"""The telemetry a run works on: read from InfluxDB, cleaned to one row per machine and time.

`read_telemetry` reads `machine_data` from a time on (`influx_magic.influx`: parameterised SQL
in bounded time slices). `prepare_telemetry` keys each row by `unique_id =
slugify(provider)-machineID`, types the features as floats and drops, and counts, what cannot
be scored. `record_identities` keeps each machine's machineID and provider beside the models,
so an alert can name a machine that sent nothing in this run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from slugify import slugify

from fleetwatch.state import FleetState
from influx_magic.influx import TAGS, InfluxSettings, connect, load_machine_data


class TelemetryError(ValueError):
    """A frame the pipeline cannot work with; the message names what is missing."""


def read_telemetry(
    influx: InfluxSettings, *, since: pd.Timestamp, features: Sequence[str]
) -> pd.DataFrame:
    """`machine_data` rows from `since` on: `time`, the tags and `features` (floats)."""
    with contextlib.closing(connect(influx)) as client:
        return load_machine_data(client, since=since, features=features)


def unique_ids(provider: pd.Series, machine: pd.Series) -> pd.Series:
    """`slugify(provider)-machineID`, the series key (slugified once per provider, not once
    per row).

    >>> unique_ids(pd.Series(["Nordhoff, Weiss & Partner"]), pd.Series(["machine2"])).tolist()
    ['nordhoff-weiss-partner-machine2']
    """
    slugs = {name: slugify(str(name)) for name in pd.unique(provider)}
    return provider.map(slugs) + "-" + machine.astype(str)


@dataclass
class Prepared:
    """The cleaned frame and how many rows were dropped, by reason."""

    frame: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in self.dropped.items()) or "none"
        machines = self.frame["unique_id"].nunique()
        return f"{len(self.frame)} row(s) of {machines} machine(s); dropped: {dropped}"


def prepare_telemetry(frame: pd.DataFrame) -> Prepared:
    """One row per machine and time with the features (every column but `time` and the tags)
    as floats, sorted by time and machine.

    A row without a usable time, machineID or provider, or without any finite feature value,
    is dropped and counted; a single missing value stays NaN (the detector carries the
    machine's last value forward). Of duplicate (machine, time) rows the last one is kept.
    """
    missing = [c for c in ["time", *TAGS] if c not in frame.columns]
    if missing:
        raise TelemetryError(f"transform_data: the loaded frame lacks column(s) {missing}")
    features = [c for c in frame.columns if c not in ("time", *TAGS)]
    data = frame.copy()
    data["time"] = pd.to_datetime(data["time"], utc=True, errors="coerce")
    for tag in TAGS:
        data[tag] = data[tag].astype("string").str.strip().replace("", pd.NA)
    for name in features:
        values = pd.to_numeric(data[name], errors="coerce")
        data[name] = pd.Series(values, index=data.index, dtype="float64")
        data.loc[~np.isfinite(data[name]), name] = np.nan
    reasons = {
        "no time": data["time"].isna(),
        "no machineID": data["machineID"].isna(),
        "no provider": data["provider"].isna(),
        "no finite feature value": data[features].isna().all(axis=1),
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
    columns = ["time", "machineID", "provider", "unique_id", *features]
    data = data.sort_values(["time", "unique_id"], kind="stable")[columns].reset_index(drop=True)
    return Prepared(data, dropped)


def record_identities(state: FleetState, frame: pd.DataFrame) -> None:
    """Remember each machine's machineID and provider (latest seen) in the state, by key."""
    machines = state.extra.setdefault("machines", {})
    if len(frame):
        names = frame.drop_duplicates("unique_id", keep="last")
        for uid, machine, provider in names[["unique_id", *TAGS]].itertuples(index=False):
            machines[str(uid)] = [str(machine), str(provider)]


def detection_summary(scored: pd.DataFrame, threshold: float) -> str:
    """What the detector did: points scored, above the threshold, skipped by reason."""
    counts = scored["status"].value_counts().to_dict() if len(scored) else {}
    above = int(scored["is_anomaly"].sum()) if len(scored) else 0
    skipped = {k: v for k, v in counts.items() if k != "scored"} or "none"
    return (
        f"{counts.get('scored', 0)} point(s) scored, {above} above the threshold "
        f"{threshold:g}; skipped: {skipped}"
    )
