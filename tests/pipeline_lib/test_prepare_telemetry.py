"""`prepare_telemetry` (work per distinct value) against the per-row pandas version it replaced."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from slugify import slugify

from influx_magic.influx import TAGS, empty_machine_frame
from influx_magic.telemetry import prepare_telemetry

FEATURES = ("load", "power")


def reference(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The transform step as it was: pandas string methods on every row."""
    features = [c for c in frame.columns if c not in ("time", *TAGS)]
    data = frame.copy()
    data["time"] = pd.to_datetime(data["time"], utc=True, errors="coerce")
    for tag in TAGS:
        data[tag] = data[tag].astype("string").str.strip().replace("", pd.NA)
    for name in features:
        values = pd.to_numeric(data[name], errors="coerce") if name in data else np.nan
        data[name] = pd.Series(values, index=data.index, dtype="float64")
        data.loc[~np.isfinite(data[name]), name] = np.nan
    reasons = {
        "no time": data["time"].isna(),
        "no machineID": data["machineID"].isna(),
        "no provider": data["provider"].isna(),
        "no finite feature value": data[list(features)].isna().all(axis=1),
    }
    bad = pd.Series(False, index=data.index)
    dropped: dict[str, int] = {}
    for reason, mask in reasons.items():
        if count := int((mask & ~bad).sum()):
            dropped[reason] = count
        bad |= mask
    data = data[~bad].astype({tag: object for tag in TAGS})
    slugs = {name: slugify(str(name)) for name in pd.unique(data["provider"])}
    # (The old step crashed here when every row had been dropped: map() gave floats.)
    data["unique_id"] = (
        (data["provider"].map(slugs) + "-" + data["machineID"].astype(str)).astype(object)
        if len(data)
        else pd.Series([], dtype=object)
    )
    before = len(data)
    data = data.drop_duplicates(["unique_id", "time"], keep="last")
    if before > len(data):
        dropped["duplicate"] = before - len(data)
    columns = ["time", "machineID", "provider", "unique_id", *features]
    data = data.sort_values(["time", "unique_id"], kind="stable")[columns].reset_index(drop=True)
    return data, dropped


tags = st.sampled_from(["machine1", " machine1", "machine2 ", "m,3", "", "  ", None, "Ä x"])
providers = st.sampled_from(["Acme, Inc", "acme inc", " Nordhoff & Weiss", "", None, "Z"])
times = st.sampled_from(
    ["2024-05-01T10:00:00Z", "2024-05-01T10:00:01Z", "2024-05-01T09:59:59Z", None]
)
numbers = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["1.5", "x"])
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(times, tags, providers, numbers, numbers), min_size=1, max_size=25),
    st.booleans(),
)
def test_same_rows_and_counts_as_the_per_row_version(rows, without_power) -> None:
    frame = pd.DataFrame(rows, columns=["time", "machineID", "provider", "load", "power"])
    if without_power:
        frame = frame.drop(columns="power")  # fewer feature columns
    want, want_dropped = reference(frame)
    got = prepare_telemetry(frame)
    assert got.dropped == want_dropped
    pd.testing.assert_frame_equal(got.frame, want, check_dtype=False)
    assert str(got.frame["time"].dtype) == "datetime64[ns, UTC]"
    assert all(got.frame[name].dtype == np.float64 for name in FEATURES if name in frame)


def test_the_loaders_empty_frame_gives_an_empty_frame() -> None:
    got = prepare_telemetry(empty_machine_frame(FEATURES))
    assert got.frame.empty and got.dropped == {}
    assert list(got.frame.columns) == ["time", "machineID", "provider", "unique_id", *FEATURES]


def test_a_large_frame_is_handled_per_distinct_value() -> None:
    n, machines = 60_000, 1000
    frame = pd.DataFrame(
        {
            "time": pd.date_range("2024-05-01", periods=n // machines, freq="1s", tz="UTC").repeat(
                machines
            ),
            "machineID": [f"machine{i % machines}" for i in range(n)],
            "provider": [f"Provider, No {i % 3}" for i in range(n)],
            "load": np.arange(n, dtype=float),
        }
    )
    want, _ = reference(frame)
    pd.testing.assert_frame_equal(prepare_telemetry(frame).frame, want, check_dtype=False)
