"""`limit`: a sensor above (or below) a value for at least a duration, per machine.

Every reading is judged once, in time order, carrying each machine's streak between runs: a
run reads the readings since the previous run's end (minus the lateness allowance; readings
already judged are skipped), so a fault that starts and ends between two runs still opens and
resolves its episode, and the schedule's interval does not change what "for 2m" means.

Per machine: the streak starts at the first reading beyond the value; when a reading beyond it
comes `for` or more after the streak's start, the episode opens (starting at the streak's
start, so its id is a function of the data); the first reading back within the limit ends the
streak, and the episode resolves once no streak has held for the recur gap (its end is the
last reading beyond the value; a streak that holds `for` again sooner is another burst of it).
A gap in the data does not break a streak: a machine that went silent while beyond the value
stays open until a reading says otherwise (the `no_data` check is the one that watches silence).

The first evaluation reads `for` plus one minute back; after an outage at most
`MAX_CATCH_UP` (1 h) plus `for`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from influx_magic.checks.evaluation import LATENESS, MAX_CATCH_UP, Evaluation, column, utc_ns
from influx_magic.checks.findings import (
    CheckEpisode,
    CheckEvent,
    CheckState,
    series_key,
)
from influx_magic.checks.spec import LimitCheck
from influx_magic.influx import sql_ident
from influx_magic.units import format_value

FIRST_LOOKBACK = pd.Timedelta(minutes=1)


def readings_sql(check: LimitCheck, table: str) -> str:
    """The sensor's readings in [$since, $until), by machine and time.

    >>> from influx_magic.checks.spec import Selection
    >>> print(readings_sql(LimitCheck("hot", 1, "", "temperature", "above", 95.0, 120.0,
    ...     Selection()), "machine_data"))
    SELECT time, "machineID", "provider", "temperature" AS value FROM "machine_data" WHERE time >= $since AND time < $until AND "temperature" IS NOT NULL ORDER BY "machineID", "provider", time
    """
    sensor = sql_ident(check.sensor)
    return (
        f'SELECT time, "machineID", "provider", {sensor} AS value FROM {sql_ident(table)} '
        f"WHERE time >= $since AND time < $until AND {sensor} IS NOT NULL "
        'ORDER BY "machineID", "provider", time'
    )


def evaluate_limit(
    check: LimitCheck, state: CheckState, run: Evaluation, events: list[CheckEvent]
) -> None:
    """Judge the readings since the last evaluation; open and resolve episodes into `events`."""
    duration = pd.Timedelta(seconds=check.duration)
    earliest = run.now - duration - pd.Timedelta(MAX_CATCH_UP)
    if state.evaluated_at is None:
        since = run.now - duration - FIRST_LOOKBACK
    else:
        since = max(pd.Timestamp(state.evaluated_at, tz="UTC") - LATENESS, earliest)
    result = run.query(
        readings_sql(check, run.table),
        {"since": since, "until": run.now},
        what=f"checking {check.name!r}",
    )
    for (machine, provider), times, values in _by_machine(result):
        if not check.selection.matches(machine, provider):
            continue
        uid = series_key(machine, provider)
        memory = state.memory.setdefault(
            uid, {"machine_id": machine, "provider": provider, "last_time": None, "streak": None}
        )
        _judge(check, state, run, uid, memory, times, values, events)


def _by_machine(result: pa.Table) -> list[tuple[tuple[str, str | None], np.ndarray, np.ndarray]]:
    if result.num_rows == 0:
        return []
    frame = pd.DataFrame(
        {
            "machine": column(result, "machineID", pa.string()),
            "provider": column(result, "provider", pa.string()),
            "time": utc_ns(result, "time"),
            "value": column(result, "value", pa.float64()),
        }
    )
    frame = frame[frame["machine"].notna()]
    groups = []
    for (machine, provider), rows in frame.groupby(
        ["machine", "provider"], dropna=False, sort=True
    ):
        provider = None if pd.isna(provider) else str(provider)
        groups.append(
            ((str(machine), provider), rows["time"].to_numpy(np.int64), rows["value"].to_numpy())
        )
    return groups


def _judge(
    check: LimitCheck,
    state: CheckState,
    run: Evaluation,
    uid: str,
    memory: dict[str, Any],
    times: np.ndarray,
    values: np.ndarray,
    events: list[CheckEvent],
) -> None:
    """Walk one machine's new readings (already judged ones skipped)."""
    if memory["last_time"] is not None:
        fresh = times > memory["last_time"]
        times, values = times[fresh], values[fresh]
    if not len(times):
        return
    beyond = values > check.value if check.direction == "above" else values < check.value
    memory["last_time"] = int(times[-1])
    streak = memory["streak"]  # {"start": ns, "worst": value, "worst_time": ns} or None
    if streak is None and uid not in state.open and not beyond.any():
        return  # the healthy common case: nothing to walk
    need = round(check.duration * 1e9)
    for t, value, out in zip(times.tolist(), values.tolist(), beyond.tolist(), strict=True):
        state.settle_one(uid, t, run.recur_gap_ns, events)  # quiet long enough before `t`
        if not out:
            streak = None
            if state.holding(uid) is not None:
                state.ease(uid, t, f"{check.sensor} back within the limit")
            continue
        if streak is None:
            streak = {"start": t, "worst": value, "worst_time": t}
        elif _worse(check, value, streak["worst"]):
            streak.update(worst=value, worst_time=t)
        if t - streak["start"] < need:
            continue
        if uid not in state.open:
            state.open_episode(_episode(check, state, uid, memory, streak, t), events)
            continue
        episode = state.hold(uid, t, events, run.follow_up_ns)
        episode.end = t
        if _worse(check, value, episode.value):
            episode.value = value
            episode.summary = _summary(check, value)
            episode.details.update(worst=value, worst_time=t)
    memory["streak"] = streak


def _worse(check: LimitCheck, value: float, than: float | None) -> bool:
    if than is None:
        return True
    return value > than if check.direction == "above" else value < than


def _episode(
    check: LimitCheck,
    state: CheckState,
    uid: str,
    memory: dict[str, Any],
    streak: dict[str, Any],
    t: int,
) -> CheckEpisode:
    return CheckEpisode(
        check=check.name,
        check_kind=check.kind,
        unique_id=uid,
        machine_id=memory["machine_id"],
        provider=memory["provider"],
        episode_id=state.episode_id(uid, streak["start"]),
        start=streak["start"],
        end=t,
        value=streak["worst"],
        summary=_summary(check, streak["worst"]),
        details={
            "rule": check.describe(),
            "sensor": check.sensor,
            "direction": check.direction,
            "limit": check.value,
            "for_s": check.duration,
            "worst": streak["worst"],
            "worst_time": streak["worst_time"],
        },
    )


def _summary(check: LimitCheck, worst: float) -> str:
    word = "highest" if check.direction == "above" else "lowest"
    return f"{check.describe()}: {word} {format_value(check.sensor, worst)}"
