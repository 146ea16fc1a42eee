"""Each kind of check judged against a real localflux holding crafted telemetry, run after run:
one episode opens and resolves once; SQL parameters are bound, never pasted; a failing check
is reported and the others go on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from influx_magic.checks.checkfile import parse_checks
from influx_magic.checks.evaluation import Evaluation
from influx_magic.checks.findings import ChecksState, series_key
from influx_magic.checks.runner import run_checks
from tests.checks.helpers import BROKEN_CHECK, HOSTILE, HOT_ROWS_CHECK, PROVIDER
from tests.checks.helpers import write_readings as write

T0 = pd.Timestamp("2024-05-01 10:00", tz="UTC")
FIELDS = ("temperature", "load")


def seconds(n: float) -> pd.Timedelta:
    return pd.Timedelta(seconds=n)


class Runs:
    """The checks of `text` judged at successive moments, with their state carried between."""

    def __init__(self, client: Any, text: str) -> None:
        self.client = client
        self.checks = parse_checks(text)
        self.state = ChecksState()
        self.events: list[tuple[str, str, str]] = []
        self.reports: list[Any] = []

    def at(self, now: pd.Timestamp) -> Any:
        state = ChecksState.from_json(self.state.to_json())  # as committed in the state file
        report = run_checks(self.checks, state, Evaluation(self.client, now))
        self.state = state
        self.reports.append(report)
        self.events += [(e.kind, e.episode.check, e.episode.unique_id) for e in report.events]
        return report


UID = {m: series_key(m, PROVIDER) for m in ("machine1", "machine2", "machine3")}

LIMIT = """\
checks:
  - name: overload
    kind: limit
    sensor: load
    above: 150
    for: 30s
"""


def test_limit_opens_once_after_the_duration_and_resolves_once(localflux_server) -> None:
    client = localflux_server.client()
    load = [100.0] * 60 + [200.0] * 90 + [100.0] * 60  # beyond 150 from T0+60s to T0+149s
    write(client, "machine1", T0, {"load": [100.0] * 210})
    write(client, "machine2", T0, {"load": load})
    runs = Runs(client, LIMIT)

    for offset in range(20, 220, 20):  # a run every 20 s
        runs.at(T0 + seconds(offset))

    assert runs.events == [
        ("opened", "overload", UID["machine2"]),
        ("resolved", "overload", UID["machine2"]),
    ]
    opened = [e for r in runs.reports for e in r.events if e.kind == "opened"][0]
    resolved = [e for r in runs.reports for e in r.events if e.kind == "resolved"][0]
    assert opened.episode.start_time == T0 + seconds(60)  # the streak's first reading
    assert opened.time == (T0 + seconds(90)).value  # due once it held for 30 s
    assert opened.episode.value == 200.0 and "load above 150 for 30s" in opened.episode.summary
    assert resolved.episode.episode_id == opened.episode.episode_id
    assert resolved.episode.end_time == T0 + seconds(149)  # the last reading beyond the limit
    assert resolved.time == (T0 + seconds(150)).value
    assert not runs.state.checks["overload"].open


def test_limit_catches_a_fault_that_starts_and_ends_between_two_runs(localflux_server) -> None:
    client = localflux_server.client()
    write(client, "machine2", T0, {"load": [100.0] * 30 + [200.0] * 40 + [100.0] * 30})
    runs = Runs(client, LIMIT)
    runs.at(T0 + seconds(20))
    runs.at(T0 + seconds(100))  # the whole fault lies between the two runs
    assert runs.events == [
        ("opened", "overload", UID["machine2"]),
        ("resolved", "overload", UID["machine2"]),
    ]


def test_limit_shorter_than_the_duration_or_on_other_machines_stays_quiet(localflux_server) -> None:
    client = localflux_server.client()
    write(client, "machine2", T0, {"load": [100.0] * 30 + [200.0] * 25 + [100.0] * 30})
    write(client, "machine3", T0, {"load": [200.0] * 85}, provider="Acme")
    runs = Runs(client, LIMIT + '    providers: "Tanaka*"\n')
    for offset in (30, 60, 90):
        runs.at(T0 + seconds(offset))
    assert runs.events == []  # 25 s beyond is not 30 s; machine3's provider is not selected


NO_DATA = """\
checks:
  - name: silent
    kind: no_data
    for: 5m
"""


def test_no_data_opens_for_a_machine_gone_silent_and_resolves_when_it_is_back(
    localflux_server,
) -> None:
    client = localflux_server.client()
    write(client, "machine1", T0, {"load": [100.0] * 900})
    write(client, "machine2", T0, {"load": [100.0] * 120})  # silent from T0+120s
    runs = Runs(client, NO_DATA)

    runs.at(T0 + seconds(60))
    runs.at(T0 + seconds(300))  # silent 181 s: not yet
    assert runs.events == []
    runs.at(T0 + seconds(500))  # silent 381 s
    assert runs.events == [("opened", "silent", UID["machine2"])]
    episode = runs.state.checks["silent"].open[UID["machine2"]]
    assert episode.start_time == T0 + seconds(119)  # the last reading
    runs.at(T0 + seconds(560))
    assert len(runs.events) == 1  # still silent: no second message

    write(client, "machine2", T0 + seconds(600), {"load": [100.0] * 30})
    runs.at(T0 + seconds(640))
    assert runs.events[1] == ("resolved", "silent", UID["machine2"])
    resolved = runs.reports[-1].events[0]
    assert resolved.time == (T0 + seconds(600)).value  # its first reading after the silence
    runs.at(T0 + seconds(700))
    assert len(runs.events) == 2


def test_no_data_ignores_a_machine_that_never_sent_anything(localflux_server) -> None:
    client = localflux_server.client()
    write(client, "machine1", T0, {"load": [100.0] * 10})
    runs = Runs(
        client, NO_DATA.replace("for: 5m", "for: 1m") + '    machines: ["machine1", "machine9"]\n'
    )
    runs.at(T0 + seconds(5))
    runs.at(T0 + seconds(600))
    assert runs.events == [("opened", "silent", UID["machine1"])]  # machine9 was never seen


WINDOW = """\
checks:
  - name: warmer
    kind: window_test
    sensor: temperature
    window: 10m
    control_offset: 7d
    k: 3
    min_points: 30
"""


def test_window_test_compares_with_the_same_window_a_week_earlier_and_stores_the_formula(
    localflux_server,
) -> None:
    client = localflux_server.client()
    rng = np.random.default_rng(3)
    week = pd.Timedelta(days=7)
    control = 40.0 + rng.normal(0.0, 1.0, 1800)
    write(client, "machine1", T0 - week, {"temperature": control})
    write(client, "machine2", T0 - week, {"temperature": control})
    write(client, "machine1", T0, {"temperature": 40.0 + rng.normal(0.0, 1.0, 1800)})
    hot = 40.0 + rng.normal(0.0, 1.0, 1800)
    hot[600:1200] += 10.0  # T0+10min .. T0+20min
    write(client, "machine2", T0, {"temperature": hot})
    runs = Runs(client, WINDOW)

    runs.at(T0 + pd.Timedelta(minutes=10))
    runs.at(T0 + pd.Timedelta(minutes=20))  # the last 10 minutes are 10 degrees warmer
    assert runs.events == [("opened", "warmer", UID["machine2"])]
    episode = runs.state.checks["warmer"].open[UID["machine2"]]
    first = episode.details["first"]
    assert first["formula"] == "z = (mean(window) - mean(control)) / std(control)"
    assert first["n_window"] == 600 and first["n_control"] == 600
    expected = (hot[600:1200].mean() - control[600:1200].mean()) / control[600:1200].std(ddof=1)
    assert first["z"] == pytest.approx(expected, rel=1e-9)
    assert episode.value == pytest.approx(expected, rel=1e-9) and expected > 3
    assert first["computed"].startswith(f"z = ({hot[600:1200].mean():.2f} - ")
    assert first["window"] == [
        (T0 + pd.Timedelta(minutes=10)).isoformat(),
        (T0 + pd.Timedelta(minutes=20)).isoformat(),
    ]
    assert first["control"][0] == (T0 + pd.Timedelta(minutes=10) - week).isoformat()

    runs.at(T0 + pd.Timedelta(minutes=30))  # back to normal
    assert runs.events[1:] == [("resolved", "warmer", UID["machine2"])]
    resolved = runs.reports[-1].events[0].episode
    assert abs(resolved.details["passed"]["z"]) <= 3


def test_window_test_does_not_judge_without_enough_readings(localflux_server) -> None:
    client = localflux_server.client()
    write(client, "machine1", T0, {"temperature": [90.0] * 600})  # no control a week earlier
    runs = Runs(client, WINDOW)
    runs.at(T0 + pd.Timedelta(minutes=10))
    assert runs.events == [] and runs.reports[0].errors == {}


SQL = "checks:\n" + HOT_ROWS_CHECK


def test_sql_check_binds_hostile_parameters_and_opens_and_resolves_once(localflux_server) -> None:
    client = localflux_server.client()
    temperature = [40.0] * 30 + [95.0] * 20 + [40.0] * 130
    write(client, "machine1", T0, {"temperature": temperature}, provider=HOSTILE)
    write(client, "machine2", T0, {"temperature": [95.0] * 180})  # hot, but another provider
    runs = Runs(client, SQL)
    assert dict(runs.checks[0].params)["provider"] == HOSTILE

    for offset in (20, 60, 100, 140, 180):
        report = runs.at(T0 + seconds(offset))
        assert report.errors == {}
    uid = series_key("machine1", HOSTILE)
    assert runs.events == [("opened", "hot-rows", uid), ("resolved", "hot-rows", uid)]
    opened = next(e for r in runs.reports for e in r.events if e.kind == "opened").episode
    assert (opened.machine_id, opened.provider) == ("machine1", HOSTILE)
    assert opened.start_time == T0 + seconds(30)  # the earliest offending row
    assert opened.details["params"] == {"limit": 90, "provider": HOSTILE}
    # The string stayed a value: the table it names is still there, every row in it.
    count = client.query("SELECT count(*) AS n FROM machine_data", language="sql")
    assert count.column("n")[0].as_py() == 360


def test_a_failing_sql_check_is_reported_and_the_other_checks_go_on(localflux_server) -> None:
    client = localflux_server.client()
    write(client, "machine2", T0, {"load": [200.0] * 60})
    text = (
        LIMIT
        + BROKEN_CHECK
        + """\
  - name: wrong-columns
    kind: sql
    query: SELECT "machineID", time FROM machine_data WHERE time >= $since
"""
    )
    runs = Runs(client, text)
    report = runs.at(T0 + seconds(60))
    assert report.evaluated == ["overload"]
    assert set(report.errors) == {"broken", "wrong-columns"}
    assert "no_such_table" in report.errors["broken"]
    assert "must return machineID, time, value" in report.errors["wrong-columns"]
    assert runs.events == [("opened", "overload", UID["machine2"])]
    assert runs.state.checks["broken"].last_error == report.errors["broken"]
    assert "failed: broken:" in report.summary()


def test_a_changed_or_removed_check_resolves_its_open_findings(localflux_server) -> None:
    client = localflux_server.client()
    write(client, "machine2", T0, {"load": [200.0] * 120})
    runs = Runs(client, LIMIT)
    runs.at(T0 + seconds(60))
    runs.checks = parse_checks(LIMIT.replace("above: 150", "above: 160"))
    runs.at(T0 + seconds(70))  # resolved, then judged afresh: still beyond the new limit
    assert [e[0] for e in runs.events] == ["opened", "resolved", "opened"]
    changed, again = runs.reports[-1].events
    assert changed.episode.resolution == "the check was changed in the checks file"
    assert again.episode.episode_id != changed.episode.episode_id  # a new story, a new id
    runs.at(T0 + seconds(110))
    runs.checks = []
    runs.at(T0 + seconds(115))
    assert [e[0] for e in runs.events] == ["opened", "resolved", "opened", "resolved"]
    assert runs.state.checks == {}


def test_a_finding_that_holds_again_within_the_recur_gap_is_one_story(localflux_server) -> None:
    client = localflux_server.client()
    load = [200.0] * 40 + [100.0] * 30 + [200.0] * 40 + [100.0] * 400  # two bursts, 30 s apart
    write(client, "machine2", T0, {"load": load})

    def story(follow_up: pd.Timedelta) -> list[tuple[str, int]]:
        checks, state, events = parse_checks(LIMIT), ChecksState(), []
        for offset in range(20, 520, 20):
            evaluation = Evaluation(
                client, T0 + seconds(offset), recur_gap=pd.Timedelta(minutes=5), follow_up=follow_up
            )
            events += run_checks(checks, state, evaluation).events
        return [(e.kind, e.episode.bursts, e.time) for e in events]

    resolved_at = (T0 + seconds(109) + pd.Timedelta(minutes=5)).value  # 5 min after the last 200
    assert story(pd.Timedelta(hours=1)) == [
        ("opened", 1, (T0 + seconds(30)).value),
        ("resolved", 2, resolved_at),
    ]
    assert story(pd.Timedelta(0)) == [
        ("opened", 1, (T0 + seconds(30)).value),
        ("recurring", 2, (T0 + seconds(100)).value),  # the second streak held for 30 s
        ("resolved", 2, resolved_at),
    ]
