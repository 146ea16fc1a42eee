"""The telemetry a run works on: read from InfluxDB, cleaned to one row per machine and time.

`read_telemetry` reads the run's shard's `machine_data` from its watermark on, up to the
fleet's newest point (`influx_magic.influx`: parameterised SQL in bounded time slices). `prepare_telemetry` keys each row by `unique_id =
slugify(provider)-machineID`, types the features as floats and drops, and counts, what cannot
be scored. `record_identities` keeps each machine's machineID and provider beside the models,
so an alert can name a machine that sent nothing in this run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from slugify import slugify

from fleetwatch.state import FleetState
from influx_magic.influx import (
    TAGS,
    connect,
    data_span,
    empty_machine_frame,
    load_machine_data,
)
from influx_magic.run_transaction import ONE_NS, Run


class TelemetryError(ValueError):
    """A frame the pipeline cannot work with; the message names what is missing."""


def read_telemetry(run: Run) -> pd.DataFrame:
    """The run's shard's `machine_data` rows from `run.since` up to the newest point of the
    whole fleet, or `FLEETWATCH_CATCHUP_MINUTES` of data when further behind: `time`, the tags
    and the run's features (floats). Where the read stopped is recorded in the run: the data
    time every shard's episodes reach (`Run.clock`)."""
    settings, features = run.settings, run.config.features
    with contextlib.closing(connect(settings.influx)) as client:
        span = data_span(client, since=run.since)
        if span is None:
            run.reached(None, None)
            return empty_machine_frame(features)
        first, latest = span
        until = min(latest + ONE_NS, first + settings.catchup)
        run.reached(until, latest)
        return load_machine_data(
            client, since=run.since, until=until, features=features, shard=settings.shard
        )


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

    The work is per distinct value, not per row: at 10,000 machines a minute holds 600,000
    rows but 10,000 machineIDs and a handful of providers, so trimming, slugifying and the
    series key are computed once per value and spread with integer codes, and duplicates and
    the order are found on those codes (per-row pandas string methods took seconds here).
    """
    missing = [c for c in ["time", *TAGS] if c not in frame.columns]
    if missing:
        raise TelemetryError(f"transform_data: the loaded frame lacks column(s) {missing}")
    features = [c for c in frame.columns if c not in ("time", *TAGS)]
    times = pd.to_datetime(frame["time"], utc=True, errors="coerce")
    time_ns = times.to_numpy("datetime64[ns]").view(np.int64)
    (machine_codes, machines), (provider_codes, providers) = (
        _tag_codes(frame[tag]) for tag in TAGS
    )
    values = np.column_stack([_finite(frame[name]) for name in features] or [np.zeros(len(frame))])
    reasons = {
        "no time": times.isna().to_numpy(),
        "no machineID": machine_codes < 0,
        "no provider": provider_codes < 0,
        "no finite feature value": np.isnan(values).all(axis=1)
        if features
        else np.ones(len(frame), bool),
    }
    bad = np.zeros(len(frame), bool)
    dropped: dict[str, int] = {}
    for reason, mask in reasons.items():
        if count := int((mask & ~bad).sum()):
            dropped[reason] = count
        bad |= mask
    keep = np.flatnonzero(~bad)
    machine_codes, provider_codes = machine_codes[keep], provider_codes[keep]

    # The series key per distinct (provider, machine) pair, and its rank in string order.
    width = max(len(machines), 1)
    pairs, series = np.unique(provider_codes * width + machine_codes, return_inverse=True)
    slugs = np.array([slugify(str(name)) for name in providers], dtype=object)
    # Two spellings of a provider can slugify alike: one key, one rank (string order).
    keys, key_of_pair = np.unique(
        slugs[pairs // width] + "-" + machines[pairs % width], return_inverse=True
    )
    rank = key_of_pair[series]

    # Of rows with the same key and time, the last one (in the loaded order) stays.
    t = time_ns[keep]
    order = np.lexsort((np.arange(len(keep)), t, rank))
    ranked, stamps = rank[order], t[order]
    last = np.r_[(ranked[1:] != ranked[:-1]) | (stamps[1:] != stamps[:-1]), True][: len(order)]
    survivors = np.sort(order[last])
    if duplicates := len(keep) - len(survivors):
        dropped["duplicate"] = duplicates
    rows = survivors[np.lexsort((rank[survivors], t[survivors]))]
    chosen = keep[rows]
    data = pd.DataFrame(
        {
            "time": pd.DatetimeIndex(time_ns[chosen].view("datetime64[ns]"), tz="UTC"),
            "machineID": machines[machine_codes[rows]],
            "provider": providers[provider_codes[rows]],
            "unique_id": keys[rank[rows]],
            **{name: values[chosen, j] for j, name in enumerate(features)},
        }
    )
    return Prepared(data, dropped)


def _tag_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per row a code into the distinct trimmed values (-1: missing or blank), and the values."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    texts = pd.Series(np.asarray(uniques, dtype=object)).astype("string").str.strip()
    blank = (texts.isna() | (texts == "")).to_numpy(bool)
    distinct, remap = np.unique(texts.fillna("").to_numpy(object), return_inverse=True)
    lookup = np.where(blank, -1, remap)
    mapped = np.where(codes >= 0, lookup[np.maximum(codes, 0)] if len(lookup) else -1, -1)
    return mapped.astype(np.int64), distinct.astype(object)


def _finite(column: pd.Series) -> np.ndarray:
    """Numbers as float64, NaN where missing, not a number, or infinite."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return np.where(np.isfinite(values), values, np.nan)


def record_identities(state: FleetState, frame: pd.DataFrame) -> None:
    """Remember each machine's machineID and provider (latest seen) in the state, by key."""
    machines = state.extra.setdefault("machines", {})
    if len(frame):
        names = frame.drop_duplicates("unique_id", keep="last")
        for uid, machine, provider in names[["unique_id", *TAGS]].itertuples(index=False):
            machines[str(uid)] = [str(machine), str(provider)]


def detection_summary(scored: pd.DataFrame, threshold: float) -> str:
    """What the detector did: points scored (of how many machines), anomalous, skipped by
    reason.

    >>> frame = pd.DataFrame({"unique_id": ["a", "a", "b"], "status": ["scored", "stale",
    ...     "scored"], "is_anomaly": [True, False, False]})
    >>> detection_summary(frame, 0.8)
    '2 point(s) scored of 2 machine(s), 1 anomalous (threshold 0.8); skipped: 1 stale'
    """
    counts = scored["status"].value_counts().to_dict() if len(scored) else {}
    done = scored[scored["status"] == "scored"] if len(scored) else scored
    above = int(done["is_anomaly"].sum()) if len(done) else 0
    machines = done["unique_id"].nunique() if len(done) else 0
    skipped = ", ".join(f"{n} {why}" for why, n in counts.items() if why != "scored") or "none"
    return (
        f"{counts.get('scored', 0)} point(s) scored of {machines} machine(s), {above} anomalous "
        f"(threshold {threshold:g}); skipped: {skipped}"
    )
