"""Declared checks in the pipeline: the five blocks, run after run, against a real localflux and
a local Slack receiver, with crafted telemetry around the current time. Each kind of check
opens one episode and resolves it, with one "Anomaly" and one "Resolved" message naming the
check, and its row in `anomaly_episodes`; a bad checks file stops the run naming the line; a
failing SQL check does not stop it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from influx_magic.checks.checkfile import ChecksFileError
from influx_magic.influx import check_row_offset
from tests.checks.helpers import BROKEN_CHECK, HOSTILE, HOT_ROWS_CHECK, PROVIDER, write_readings
from tests.influx_magic.conftest import PipelineWorld
from tests.influx_magic.helpers import file_digest, run_blocks

WEEK = pd.Timedelta(days=7)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEALTHY = {"temperature": 38.0, "load": 75.0, "power": 200.0, "vibration": 80.0}


@pytest.fixture(autouse=True)
def resolve_at_once(world: PipelineWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finding resolves as soon as it stops holding (no recur gap), so a test need not wait
    ALERT_RECUR_GAP_MIN of wall-clock time; recurrence is tested in tests/checks."""
    monkeypatch.setenv("ALERT_RECUR_GAP_MIN", "0")


def write(
    world: PipelineWorld,
    machine: str,
    start: pd.Timestamp,
    values: dict[str, Any],
    provider: str = PROVIDER,
) -> None:
    """One reading a second from `start` (a later write at the same time replaces it); the
    sensors not given read healthy values."""
    columns = {name: np.asarray(list(v), dtype=float) for name, v in values.items()}
    count = len(next(iter(columns.values())))
    noise = np.random.default_rng(count).normal(0.0, 1.0, count)
    for name, level in HEALTHY.items():
        columns.setdefault(name, level + noise)
    write_readings(world.client, machine, start, columns, provider)


def now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("s")


def check_messages(world: PipelineWorld, word: str, check: str) -> list[dict]:
    return [
        body
        for body in world.receiver.payloads()
        if str(body.get("text", "")).startswith(word) and f"check {check} (" in body["text"]
    ]


def episode_rows(world: PipelineWorld, check: str) -> list[dict]:
    result = world.client.query(
        "SELECT * FROM anomaly_episodes WHERE check_name = $check",
        language="sql",
        query_parameters={"check": check},
    )
    return result.to_pylist()


def assert_one_story(world: PipelineWorld, check: str, machine: str) -> tuple[dict, dict]:
    """One Anomaly and one Resolved message for `check` on `machine`, same episode; one row."""
    opened = check_messages(world, "Anomaly", check)
    resolved = check_messages(world, "Resolved", check)
    assert len(opened) == 1 and len(resolved) == 1, (opened, resolved)
    for body in (opened[0], resolved[0]):
        assert f"on {machine} (" in body["text"]
    assert episode_field(opened[0]) == episode_field(resolved[0]) is not None
    for body, kind in ((opened[0], "opened"), (resolved[0], "resolved")):
        plot = linked_plot(world, body)  # a plot of the checked sensor, one per message
        assert plot.name.endswith(f"-{kind}.png") and plot.parent.name.endswith(f"-{machine}")
        assert plot.read_bytes().startswith(PNG_MAGIC)
    rows = episode_rows(world, check)
    assert len(rows) == 1, rows
    assert rows[0]["status"] == "resolved" and rows[0]["machineID"] == machine
    return opened[0], rows[0]


def linked_plot(world: PipelineWorld, body: dict) -> Path:
    """The PNG file the message's plot link points at (served from FLEETWATCH_OUTPUT_DIR)."""
    found = re.search(r"<http://plots\.example/plots/([^|>]+)\|Plot>", json.dumps(body))
    assert found, body
    return world.plots / unquote(found.group(1))


def episode_field(body: dict) -> str | None:
    fields = body["blocks"][1]["fields"]
    return next((f["text"] for f in fields if f["text"].startswith("*Episode*")), None)


def declare(world: PipelineWorld, text: str) -> None:
    world.checks_file.write_text(text)


def test_a_limit_check_alerts_once_and_resolves_once(world: PipelineWorld, tmp_path: Path) -> None:
    declare(
        world,
        "checks:\n  - {name: overload, kind: limit, sensor: load, above: 150, for: 30s}\n",
    )
    start = now() - pd.Timedelta(seconds=180)
    write(world, "machine1", start, {"load": [100.0] * 180})
    write(world, "machine2", start, {"load": [100.0] * 120 + [200.0] * 60})
    run_blocks(tmp_path)
    assert len(check_messages(world, "Anomaly", "overload")) == 1
    back = now() - pd.Timedelta(seconds=3)
    write(world, "machine2", back, {"load": [100.0] * 3})
    run_blocks(tmp_path)
    run_blocks(tmp_path)
    opened, row = assert_one_story(world, "overload", "machine2")
    assert "load above 150 for 30s: highest 200 %" in opened["text"]
    assert row["check_kind"] == "limit" and row["check_value"] == 200.0
    # stamped at the streak's first reading plus the check's offset (never a detector row)
    stamp = start + pd.Timedelta(seconds=120) + pd.Timedelta(check_row_offset("overload"), "ns")
    assert pd.Timestamp(row["time"]) == stamp.tz_localize(None)


def test_a_no_data_check_alerts_once_for_a_machine_gone_silent(
    world: PipelineWorld, tmp_path: Path
) -> None:
    declare(world, "checks:\n  - {name: silent, kind: no_data, for: 5m}\n")
    start = now() - pd.Timedelta(seconds=400)
    write(world, "machine1", start, {"load": [100.0] * 400})
    write(world, "machine2", start, {"load": [100.0] * 60})  # silent for the last 340 s
    run_blocks(tmp_path)
    assert [m["text"].split(" (")[0] for m in check_messages(world, "Anomaly", "silent")] == [
        "Anomaly on machine2"
    ]
    run_blocks(tmp_path)  # still silent: no second message
    write(world, "machine2", now() - pd.Timedelta(seconds=2), {"load": [100.0] * 2})
    run_blocks(tmp_path)
    opened, row = assert_one_story(world, "silent", "machine2")
    assert "no data for 5m" in opened["text"]


def test_a_fleet_gone_silent_gets_one_digest_with_a_few_plots_not_one_per_machine(
    world: PipelineWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telegraf down for the whole fleet: one digest, and plots for the first ALERT_DIGEST_MIN
    machines it lists only (at 10,000 machines one plot each took the run past an hour)."""
    monkeypatch.setenv("ALERT_DIGEST_MIN", "3")
    declare(world, "checks:\n  - {name: silent, kind: no_data, for: 5m}\n")
    start = now() - pd.Timedelta(seconds=400)
    for index in range(12):
        write(world, f"machine{index}", start, {"load": [100.0] * 60})
    run_blocks(tmp_path)
    digests = [b for b in world.receiver.payloads() if b["text"].startswith("Anomaly on 12 ")]
    assert len(digests) == 1 and len(world.receiver.payloads()) == 1, world.receiver.payloads()
    links = re.findall(r"<http://plots\.example/plots/([^|>]+)\|plot>", json.dumps(digests[0]))
    assert len(links) == 3
    drawn = sorted(world.plots.rglob("*.png"))
    assert sorted(world.plots / unquote(link) for link in links) == drawn
    assert len(episode_rows(world, "silent")) == 12  # every finding is an episode all the same


def test_a_window_test_alerts_once_with_its_formula_stored(
    world: PipelineWorld, tmp_path: Path
) -> None:
    declare(
        world,
        "checks:\n"
        "  - name: warmer\n    kind: window_test\n    sensor: temperature\n"
        "    window: 20s\n    control_offset: 7d\n    k: 3\n    min_points: 10\n",
    )
    rng = np.random.default_rng(5)
    t = now()
    control_start = t - WEEK - pd.Timedelta(seconds=120)
    write(world, "machine2", control_start, {"temperature": 40 + rng.normal(0, 1, 300)})
    write(world, "machine2", t - pd.Timedelta(seconds=60), {"temperature": [50.0] * 60})
    run_blocks(tmp_path)
    assert len(check_messages(world, "Anomaly", "warmer")) == 1
    t2 = now()
    write(
        world, "machine2", t2 - pd.Timedelta(seconds=30), {"temperature": 40 + rng.normal(0, 1, 30)}
    )
    run_blocks(tmp_path)
    opened, row = assert_one_story(world, "warmer", "machine2")
    assert "z = (50.00 - " in opened["text"]
    details = json.loads(row["check_details"])
    first = details["first"]
    assert first["formula"] == "z = (mean(window) - mean(control)) / std(control)"
    assert first["mean_window"] == 50.0 and first["n_window"] >= 10 and first["n_control"] >= 10
    z = (first["mean_window"] - first["mean_control"]) / first["std_control"]
    assert first["z"] == pytest.approx(z) and z > 3
    assert row["check_value"] == pytest.approx(z)
    assert abs(details["passed"]["z"]) <= 3


SQL_CHECKS = "checks:\n" + HOT_ROWS_CHECK + BROKEN_CHECK


def test_a_sql_check_alerts_once_with_hostile_parameters_bound_and_a_broken_one_is_reported(
    world: PipelineWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(world, SQL_CHECKS)
    start = now() - pd.Timedelta(seconds=30)
    write(world, "machine1", start, {"temperature": [95.0] * 30}, provider=HOSTILE)
    write(world, "machine2", start, {"temperature": [95.0] * 30})  # hot, another provider
    run_blocks(tmp_path)
    printed = capsys.readouterr().out
    assert "failed: broken:" in printed and "no_such_table" in printed  # and the run went on
    assert len(check_messages(world, "Anomaly", "hot-rows")) == 1
    t2 = now()
    write(
        world,
        "machine1",
        t2 - pd.Timedelta(seconds=65),
        {"temperature": [40.0] * 65},
        provider=HOSTILE,
    )
    run_blocks(tmp_path)
    opened, row = assert_one_story(world, "hot-rows", "machine1")
    assert row["provider"] == HOSTILE
    assert json.loads(row["check_details"])["params"]["provider"] == HOSTILE
    assert world.client.query("SELECT count(*) AS n FROM machine_data").column("n")[0].as_py() > 0


def test_a_bad_checks_file_stops_the_run_naming_the_line_and_sends_nothing(
    world: PipelineWorld, tmp_path: Path
) -> None:
    declare(world, "checks:\n  - name: hot\n    kind: limit\n    sensor: load\n    above: lots\n")
    write(world, "machine2", now() - pd.Timedelta(seconds=60), {"load": [100.0] * 60})
    with pytest.raises(
        ChecksFileError,
        match=r"checks.yaml line 5: check 'hot' \(limit\): 'above' must be a number",
    ):
        run_blocks(tmp_path)
    assert world.receiver.payloads() == []
    assert file_digest(world.state_file) is None  # nothing committed: the next run redoes it
    declare(world, "checks:\n  - {name: hot, kind: limit, sensor: load, above: 150}\n")
    run_blocks(tmp_path)
    assert world.state_file.exists()


def test_an_experiment_run_does_not_judge_the_checks(
    world: PipelineWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(world, "checks:\n  - {name: overload, kind: limit, sensor: load, above: 150}\n")
    write(world, "machine2", now() - pd.Timedelta(seconds=60), {"load": [200.0] * 60})
    run_blocks(tmp_path, threshold=0.9)
    assert "checks: not judged (an experiment run" in (capsys.readouterr().out)
    assert check_messages(world, "Anomaly", "overload") == []
    run_blocks(tmp_path)  # the scheduled configuration judges them
    assert len(check_messages(world, "Anomaly", "overload")) == 1


def test_with_the_fleet_in_shards_shard_0_judges_the_checks_once_for_all(
    world: PipelineWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FLEETWATCH_SHARDS", "2")
    declare(
        world,
        "checks:\n  - {name: overload, kind: limit, sensor: load, above: 150, for: 30s}\n",
    )
    start = now() - pd.Timedelta(seconds=120)
    for machine in ("machine1", "machine2", "machine3", "machine4"):  # some in each shard
        write(world, machine, start, {"load": [100.0] * 60 + [200.0] * 60})
    for _ in range(2):  # the same findings, judged again: no second message
        for shard in (1, 0):
            run_blocks(tmp_path, shard=shard)
    printed = capsys.readouterr().out
    assert "checks: not judged (shard 1 of 2; shard 0 judges them" in printed
    opened = check_messages(world, "Anomaly", "overload")
    assert sorted(m["text"].split(" (")[0] for m in opened) == [
        f"Anomaly on machine{i}" for i in range(1, 5)
    ]
    assert len(episode_rows(world, "overload")) == 4
