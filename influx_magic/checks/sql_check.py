"""`sql`: a query of the user's that returns the offending rows, with its parameters bound.

The query runs against InfluxDB 3 at each run with `$since` and `$until` bound to the check's
window (the last `window`, ending now) and every entry of `params` bound by name: the client
sends the values beside the SQL (`query(..., query_parameters=...)`), so a value holding quotes,
commas or `'; DROP TABLE ...` is compared as the text it is and never becomes SQL.

It must return the columns `machineID`, `time` and `value` (and `provider`, when the rows have
one; without it the provider the pipeline knows for that machineID is used). A machine with
rows has a finding: the first evaluation that returns rows for it opens an episode (starting at
its earliest row), later ones keep it open, the first evaluation without rows for it ends it,
and it resolves once no evaluation has returned rows for it for the recur gap. A query that
fails, or returns other columns, is a `CheckFailed`/`InfluxError` for this run only: the
runner reports it and the other checks go on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa

from influx_magic.checks.evaluation import CheckFailed, Evaluation
from influx_magic.checks.findings import (
    CheckEpisode,
    CheckEvent,
    CheckState,
    series_key,
)
from influx_magic.checks.spec import SqlCheck, format_duration

REQUIRED_COLUMNS = ("machineID", "time", "value")
SHOWN_ROWS = 5  # offending rows kept with a finding


def evaluate_sql(
    check: SqlCheck, state: CheckState, run: Evaluation, events: list[CheckEvent]
) -> None:
    """Run the check's query; open, extend and resolve findings into `events`."""
    params: dict[str, Any] = {
        "since": run.now - pd.Timedelta(seconds=check.window),
        "until": run.now,
        **dict(check.params),
    }
    result = run.query(check.query, params, f"running SQL check {check.name!r}")
    rows = offending_rows(check, result, run.providers)
    found = set()
    for (machine, provider), group in rows.groupby(
        ["machine", "provider"], dropna=False, sort=True
    ):
        provider = None if pd.isna(provider) else str(provider)
        uid = series_key(machine, provider)
        found.add(uid)
        group = group.sort_values("time")
        latest = group.iloc[-1]
        shown = [
            [pd.Timestamp(t, tz="UTC").isoformat(), v]
            for t, v in zip(
                group["time"].tail(SHOWN_ROWS), group["value"].tail(SHOWN_ROWS), strict=True
            )
        ]
        observed = {
            "rows": len(group),
            "latest_rows": shown,
            "window": format_duration(check.window),
        }
        if uid not in state.open:
            state.open_episode(
                CheckEpisode(
                    check=check.name,
                    check_kind=check.kind,
                    unique_id=uid,
                    machine_id=str(machine),
                    provider=provider,
                    episode_id=state.episode_id(uid, state.evaluated_at or 0),
                    start=int(group["time"].iloc[0]),
                    end=int(latest["time"]),
                    value=_value(latest["value"]),
                    summary=_summary(check, group, latest),
                    details={"params": dict(check.params), **observed},
                ),
                events,
            )
        else:
            episode = state.hold(uid, run.now_ns, events, run.follow_up_ns)
            episode.end = max(episode.end, int(latest["time"]))
            episode.value = _value(latest["value"])
            episode.summary = _summary(check, group, latest)
            episode.details.update(observed)
    for uid in sorted(set(state.open) - found):
        if state.holding(uid) is not None:
            state.ease(uid, run.now_ns, "the query returns no rows for it")


def offending_rows(check: SqlCheck, result: pa.Table, providers: Mapping[str, str]) -> pd.DataFrame:
    """The result as rows `machine`, `provider`, `time` (ns), `value`, for selected machines."""
    missing = [name for name in REQUIRED_COLUMNS if name not in result.column_names]
    if missing:
        raise CheckFailed(
            f"SQL check {check.name!r} returned the columns {', '.join(result.column_names) or 'none'}; "
            f"it must return {', '.join(REQUIRED_COLUMNS)} (and provider), e.g. "
            'SELECT "machineID", provider, time, temperature AS value ...'
        )
    try:
        frame = pd.DataFrame(
            {
                "machine": result.column("machineID").cast(pa.string()).to_pandas(),
                "time": result.column("time").cast(pa.timestamp("ns")).cast(pa.int64()).to_pandas(),
                "value": result.column("value").cast(pa.float64()).to_pandas(),
            }
        )
        if "provider" in result.column_names:
            frame["provider"] = result.column("provider").cast(pa.string()).to_pandas()
        else:
            frame["provider"] = frame["machine"].map(dict(providers))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise CheckFailed(
            f"SQL check {check.name!r}: time must be a timestamp and value a number ({error})"
        ) from None
    frame = frame[frame["machine"].notna() & frame["time"].notna()]
    selected = [
        check.selection.matches(str(m), None if pd.isna(p) else str(p))
        for m, p in zip(frame["machine"], frame["provider"], strict=True)
    ]
    return frame[selected] if len(frame) else frame


def _value(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)


def _summary(check: SqlCheck, group: pd.DataFrame, latest: pd.Series) -> str:
    count = f"{len(group)} offending row{'s' if len(group) != 1 else ''}"
    value = "—" if pd.isna(latest["value"]) else f"{float(latest['value']):g}"
    return f"{count} in the last {format_duration(check.window)}, latest value {value}"
