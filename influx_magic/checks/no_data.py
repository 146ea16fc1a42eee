"""`no_data`: a machine that sent readings before and nothing for a duration.

Each run asks InfluxDB, per machine, for the first and last reading time since the previous
evaluation (minus the lateness allowance; on the first evaluation, since `seen_within`), and
remembers each machine's last reading. A machine is known once one of its rows has been seen:
one that never sent anything is not missing. A known machine whose last reading is `for` or
more before `now` opens an episode that starts at that last reading (so its id is a function
of the data); its first reading after the silence ends it, and it resolves once the machine has
kept sending for the recur gap (silent again sooner: another burst of the same episode).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from influx_magic.checks.evaluation import LATENESS, Evaluation, column, utc_ns
from influx_magic.checks.findings import (
    CheckEpisode,
    CheckEvent,
    CheckState,
    series_key,
)
from influx_magic.checks.spec import NoDataCheck, format_duration
from influx_magic.influx import sql_ident


def last_seen_sql(table: str) -> str:
    """Per machine, the first and last reading time since $since.

    >>> print(last_seen_sql("machine_data"))
    SELECT "machineID", "provider", min(time) AS first, max(time) AS last FROM "machine_data" WHERE time >= $since GROUP BY "machineID", "provider"
    """
    return (
        'SELECT "machineID", "provider", min(time) AS first, max(time) AS last '
        f'FROM {sql_ident(table)} WHERE time >= $since GROUP BY "machineID", "provider"'
    )


def evaluate_no_data(
    check: NoDataCheck, state: CheckState, run: Evaluation, events: list[CheckEvent]
) -> None:
    """Update the machines' last readings; open and resolve episodes into `events`."""
    horizon = run.now - pd.Timedelta(seconds=check.seen_within)
    since = horizon
    if state.evaluated_at is not None:
        since = max(pd.Timestamp(state.evaluated_at, tz="UTC") - LATENESS, horizon)
    result = run.query(last_seen_sql(run.table), {"since": since}, f"checking {check.name!r}")
    if result.num_rows:
        machines = column(result, "machineID", pa.string()).tolist()
        providers = column(result, "provider", pa.string()).tolist()
        firsts = utc_ns(result, "first").tolist()
        lasts = utc_ns(result, "last").tolist()
        for machine, provider, first, last in zip(machines, providers, firsts, lasts, strict=True):
            provider = None if pd.isna(provider) else provider
            if machine is None or not check.selection.matches(machine, provider):
                continue
            _seen(state, machine, provider, int(first), int(last))
    need = round(check.duration * 1e9)
    for uid, memory in sorted(state.memory.items()):
        silent = run.now_ns - memory["last_seen"]
        if silent < need:
            continue
        if uid not in state.open:
            state.open_episode(_episode(check, state, uid, memory, run.now_ns), events)
            continue
        episode = state.hold(uid, run.now_ns, events, run.follow_up_ns)
        episode.end, episode.value = run.now_ns, silent / 1e9
        episode.summary = _summary(check, memory["last_seen"], silent)


def _seen(
    state: CheckState,
    machine: str,
    provider: str | None,
    first: int,
    last: int,
) -> None:
    uid = series_key(machine, provider)
    memory = state.memory.setdefault(
        uid, {"machine_id": machine, "provider": provider, "last_seen": last}
    )
    before = memory["last_seen"]
    if last <= before:
        return
    memory["last_seen"] = last
    episode = state.holding(uid)
    if episode is not None:
        back = first if first > before else last  # the first reading after the silence
        episode.end, episode.value = back, (back - before) / 1e9
        episode.details["back_at"] = back
        state.ease(uid, back, "readings arrive again")


def _episode(
    check: NoDataCheck, state: CheckState, uid: str, memory: dict, now: int
) -> CheckEpisode:
    last = int(memory["last_seen"])
    return CheckEpisode(
        check=check.name,
        check_kind=check.kind,
        unique_id=uid,
        machine_id=memory["machine_id"],
        provider=memory["provider"],
        episode_id=state.episode_id(uid, last),
        start=last,
        end=now,
        value=(now - last) / 1e9,
        summary=_summary(check, last, now - last),
        details={"rule": check.describe(), "for_s": check.duration, "last_reading": last},
    )


def _summary(check: NoDataCheck, last: int, silent_ns: int) -> str:
    when = pd.Timestamp(last, tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"no data for {format_duration(silent_ns / 1e9)} (last reading {when}; rule: {check.describe()})"
