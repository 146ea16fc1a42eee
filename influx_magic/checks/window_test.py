"""`window_test`: the mean of the last window against a control window, in standard deviations.

Per machine, at each run: the sensor's mean over the last `window` (ending now) and the mean
and standard deviation (sample) over the control window, the same span `control_offset`
earlier (e.g. `window: 1h`, `control_offset: 7d`: this hour against the same hour a week ago).

    z = (mean(window) - mean(control)) / std(control)

A finding when z > k (`direction: above`), z < -k (`below`) or |z| > k (`both`, the default).
A machine with fewer than `min_points` readings in either window is not judged this run (an
open finding stays open). A control window without spread (std 0) gives z = 0 when the means
agree and an infinite z when they do not. The formula, its inputs and its result are stored with
the finding (`details`), for the first failing evaluation and the worst one.

The first failing evaluation opens the episode (starting at its window's start); the first
passing one ends it, and it resolves once no evaluation has failed for the recur gap. Episode ids follow the committed evaluation they came after, so a
redone run names its findings as the failed run did.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pyarrow as pa

from influx_magic.checks.evaluation import Evaluation, column
from influx_magic.checks.findings import (
    CheckEpisode,
    CheckEvent,
    CheckState,
    series_key,
)
from influx_magic.checks.spec import WindowTest
from influx_magic.influx import sql_ident

FORMULA = "z = (mean(window) - mean(control)) / std(control)"


def window_stats_sql(sensor: str, table: str) -> str:
    """Mean, sample standard deviation and count of `sensor` per machine in [$since, $until).

    >>> print(window_stats_sql("temperature", "machine_data"))
    SELECT "machineID", "provider", avg("temperature") AS mean, stddev("temperature") AS std, count("temperature") AS n FROM "machine_data" WHERE time >= $since AND time < $until AND "temperature" IS NOT NULL GROUP BY "machineID", "provider"
    """
    name = sql_ident(sensor)
    return (
        f'SELECT "machineID", "provider", avg({name}) AS mean, stddev({name}) AS std, '
        f"count({name}) AS n FROM {sql_ident(table)} "
        f"WHERE time >= $since AND time < $until AND {name} IS NOT NULL "
        'GROUP BY "machineID", "provider"'
    )


def z_score(mean_window: float, mean_control: float, std_control: float) -> float:
    """The test statistic; a control without spread gives 0 or an infinite z.

    >>> z_score(96.2, 71.5, 2.0), z_score(5.0, 5.0, 0.0), z_score(6.0, 5.0, 0.0)
    (12.35, 0.0, inf)
    """
    if not std_control > 0:
        if mean_window == mean_control:
            return 0.0
        return math.copysign(math.inf, mean_window - mean_control)
    return round((mean_window - mean_control) / std_control, 12)


def fails(check: WindowTest, z: float) -> bool:
    if check.direction == "above":
        return z > check.k
    if check.direction == "below":
        return z < -check.k
    return abs(z) > check.k


def evaluate_window_test(
    check: WindowTest, state: CheckState, run: Evaluation, events: list[CheckEvent]
) -> None:
    """Test every machine with enough readings in both windows; open and resolve findings."""
    window = pd.Timedelta(seconds=check.window)
    offset = pd.Timedelta(seconds=check.control_offset)
    spans = {
        "window": (run.now - window, run.now),
        "control": (run.now - offset - window, run.now - offset),
    }
    stats = {name: _stats(check, run, since, until) for name, (since, until) in spans.items()}
    for key in sorted(set(stats["window"]) & set(stats["control"])):
        machine, provider = key
        current, control = stats["window"][key], stats["control"][key]
        if min(current["n"], control["n"]) < check.min_points:
            continue
        z = z_score(current["mean"], control["mean"], control["std"])
        details = _details(check, spans, current, control, z)
        uid = series_key(machine, provider)
        if fails(check, z):
            if uid not in state.open:
                state.open_episode(
                    _episode(check, state, uid, machine, provider, spans, z, details), events
                )
                continue
            episode = state.hold(uid, run.now_ns, events, run.follow_up_ns)
            episode.end = run.now_ns
            if abs(z) > abs(episode.value or 0.0):
                episode.value, episode.summary = z, _summary(check, details)
                episode.details["worst"] = details
        elif (episode := state.holding(uid)) is not None:
            episode.details["passed"] = details
            state.ease(uid, run.now_ns, f"z = {_number(z)} within ±{check.k:g}")


def _stats(
    check: WindowTest, run: Evaluation, since: pd.Timestamp, until: pd.Timestamp
) -> dict[tuple[str, str | None], dict[str, float]]:
    result = run.query(
        window_stats_sql(check.sensor, run.table),
        {"since": since, "until": until},
        f"checking {check.name!r}",
    )
    if result.num_rows == 0:
        return {}
    frame = pd.DataFrame(
        {
            "machine": column(result, "machineID", pa.string()),
            "provider": column(result, "provider", pa.string()),
            "mean": column(result, "mean", pa.float64()),
            "std": column(result, "std", pa.float64()),
            "n": column(result, "n", pa.int64()),
        }
    )
    found = {}
    for row in frame.itertuples(index=False):
        provider = None if pd.isna(row.provider) else str(row.provider)
        if row.machine is None or not check.selection.matches(str(row.machine), provider):
            continue
        std = float(row.std) if pd.notna(row.std) else 0.0
        found[(str(row.machine), provider)] = {"mean": float(row.mean), "std": std, "n": int(row.n)}
    return found


def _details(
    check: WindowTest,
    spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    current: dict[str, float],
    control: dict[str, float],
    z: float,
) -> dict[str, Any]:
    comparison = {
        "above": f"> {check.k:g}",
        "below": f"< -{check.k:g}",
        "both": f"|z| > {check.k:g}",
    }
    computed = (
        f"z = ({_number(current['mean'])} - {_number(control['mean'])}) / "
        f"{_number(control['std'])} = {_number(z)}"
    )
    return {
        "formula": FORMULA,
        "computed": computed,
        "test": comparison[check.direction],
        "sensor": check.sensor,
        "window": [spans["window"][0].isoformat(), spans["window"][1].isoformat()],
        "control": [spans["control"][0].isoformat(), spans["control"][1].isoformat()],
        "mean_window": current["mean"],
        "n_window": current["n"],
        "mean_control": control["mean"],
        "std_control": control["std"],
        "n_control": control["n"],
        "z": z if math.isfinite(z) else str(z),
        "k": check.k,
        "direction": check.direction,
    }


def _episode(
    check: WindowTest,
    state: CheckState,
    uid: str,
    machine: str,
    provider: str | None,
    spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    z: float,
    details: dict[str, Any],
) -> CheckEpisode:
    start, end = (int(moment.value) for moment in spans["window"])
    return CheckEpisode(
        check=check.name,
        check_kind=check.kind,
        unique_id=uid,
        machine_id=machine,
        provider=provider,
        episode_id=state.episode_id(uid, state.evaluated_at or 0),
        start=start,
        end=end,
        value=z,
        summary=_summary(check, details),
        details={"rule": check.describe(), "first": details, "worst": details},
    )


def _summary(check: WindowTest, details: dict[str, Any]) -> str:
    return f"{check.sensor}: {details['computed']}, beyond {details['test']} ({details['formula']})"


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.2f}"
