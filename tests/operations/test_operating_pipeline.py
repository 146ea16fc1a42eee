"""Operator feedback changes what the pipeline alerts, end to end with the real parts: the five
Mage blocks run in order in this process against a real localflux, a local Slack receiver, and
the `influx-magic` tool's own entry point on the same settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from influx_magic.influx import FEATURES, write_frame
from influx_magic.operations.cli import main
from influx_magic.operations.machines_file import MachinesFileError
from influx_magic.operations.operator_store import OperatorStore
from influx_magic.runlock import RunLock
from influx_magic.shards import shard_of
from tests.influx_magic.conftest import PipelineWorld, world  # noqa: F401 - the fixture
from tests.influx_magic.helpers import count_rows, mage_run, messages, run_blocks
from tests.operations.helpers import StoryTelemetry, episode_rows, feedback_rows

pytestmark = pytest.mark.slow

CONSOLE_SCRIPT = Path(sys.executable).with_name("influx-magic")  # installed by `make setup`
RECUR_GAP = 600  # quiet seconds after which an episode resolves (ALERT_RECUR_GAP_MIN = 10)


@pytest.fixture
def operator_env(world: PipelineWorld, tmp_path: Path, monkeypatch) -> Path:  # noqa: F811
    """An empty machines file of the test's own, and the operator's name."""
    machines = tmp_path / "machines.yaml"
    machines.write_text("machines: []\n", encoding="utf-8")
    monkeypatch.setenv("MACHINES_FILE", str(machines))
    monkeypatch.setenv("USER", "ana")
    return machines


def tool(capsys, *argv: str) -> str:
    """Run `influx-magic ARGV...` in-process; its output (it must succeed)."""
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_mute_stores_the_episode_as_muted_and_unmute_lets_the_next_one_alert(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
    capsys,
) -> None:
    story = StoryTelemetry.after_history(world.client)
    run_blocks(tmp_path)

    said = tool(capsys, "mute", "machine2", "--for", "2h", "--reason", "bearing swap")
    assert "muted machine2 (provider" in said and "bearing swap" in said
    assert "and in anomaly_feedback" in said

    story.write(180, overload=["machine2"])
    run_blocks(tmp_path)
    assert messages(world.receiver, "Anomaly") == []
    rows = episode_rows(world.client, "machine2")
    assert [r["status"] for r in rows] == ["muted"]
    muted_id = rows[0]["episode_id"]
    assert OperatorStore(world.state_dir).read().episodes[muted_id].muted

    assert "its next episode alerts" in tool(capsys, "unmute", "machine2")
    story.write(RECUR_GAP + 60)  # the fault ended: the muted episode resolves, silently
    run_blocks(tmp_path)
    assert world.receiver.payloads() == []
    assert [r["status"] for r in episode_rows(world.client, "machine2")] == ["muted"]

    story.write(180, overload=["machine2"])
    run_blocks(tmp_path)
    alerted = messages(world.receiver, "Anomaly", "machine2")
    assert len(alerted) == 1 and muted_id not in str(alerted[0])
    assert [r["status"] for r in episode_rows(world.client, "machine2")] == ["muted", "open"]
    actions = [(r["machineID"], r["action"], r["who"]) for r in feedback_rows(world.client)]
    assert actions == [("machine2", "mute", "ana"), ("machine2", "unmute", "ana")]


def test_a_false_alarm_quiets_the_benign_repeat_and_an_overload_still_alerts(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
    capsys,
) -> None:
    story = StoryTelemetry.after_history(world.client, 150)
    story.write(150, bump=["machine1"])  # a tool change: vibration +30 % for 15 s
    run_blocks(tmp_path)
    opened = messages(world.receiver, "Anomaly", "machine1")
    assert len(opened) == 1, [m["text"] for m in world.receiver.payloads()]
    episode = episode_rows(world.client, "machine1")[0]["episode_id"]

    said = tool(capsys, "false-alarm", episode[:8], "--note", "tool change, every shift")
    assert f"false alarm recorded for episode {episode} on machine1" in said
    assert "threshold for vibration-led points of machine1 raised 0.800 -> 0.8" in said

    story.write(RECUR_GAP)  # the episode resolves: its "Resolved" still comes
    story.write(150, bump=["machine1"])  # the same benign pattern again: not alerted
    run_blocks(tmp_path)
    assert len(messages(world.receiver, "Resolved", "machine1")) == 1
    assert len(messages(world.receiver, "Anomaly", "machine1")) == 1

    story.write(180, overload=["machine1"])  # a real fault of another kind: alerted
    run_blocks(tmp_path)
    assert len(messages(world.receiver, "Anomaly", "machine1")) == 2
    assert [r["action"] for r in feedback_rows(world.client)] == ["false_alarm"]
    assert feedback_rows(world.client)[0]["reason"] == "tool change, every shift"


def test_an_acknowledged_episode_gets_no_follow_up_and_another_one_does(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
    capsys,
) -> None:
    story = StoryTelemetry.after_history(world.client, 60)
    story.write(60, overload=["machine1", "machine2"])
    run_blocks(tmp_path)
    assert len(messages(world.receiver, "Anomaly")) == 2
    episodes = {m: episode_rows(world.client, m)[0]["episode_id"] for m in ("machine1", "machine2")}
    said = tool(capsys, "ack", episodes["machine1"], "--reason", "on it")
    assert f"acknowledged episode {episodes['machine1']} on machine1" in said

    for _ in range(13):  # the fault recurs every 5 min for an hour: one story per machine
        story.write(240)
        story.write(60, overload=["machine1", "machine2"])
    run_blocks(tmp_path)
    assert len(messages(world.receiver, "Still recurring", "machine2")) == 1
    assert messages(world.receiver, "Still recurring", "machine1") == []
    assert len(messages(world.receiver, "Anomaly")) == 2  # the same two episodes all along
    assert {r["episode_id"] for r in episode_rows(world.client, "machine1")} == {
        episodes["machine1"]
    }
    assert [r["action"] for r in feedback_rows(world.client)] == ["ack"]


def test_a_machines_file_threshold_changes_that_machines_alerts_only(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
) -> None:
    operator_env.write_text(
        "machines:\n  - machine: machine2\n    threshold: 0.9\n", encoding="utf-8"
    )
    story = StoryTelemetry.after_history(world.client)
    story.write(180, overload=["machine2", "machine3"])
    run_blocks(tmp_path)
    assert messages(world.receiver, "Anomaly", "machine3")
    assert messages(world.receiver, "Anomaly", "machine2") == []
    assert episode_rows(world.client, "machine2") == []


def test_an_invalid_machines_file_stops_the_run_naming_the_line_and_loses_nothing(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
    capsys,
) -> None:
    story = StoryTelemetry.after_history(world.client)
    run_blocks(tmp_path)
    committed = world.state_file.read_bytes()
    operator_env.write_text(
        "machines:\n  - machine: machine2\n    threshold: 0,9\n", encoding="utf-8"
    )
    story.write(180, overload=["machine2"])
    with pytest.raises(MachinesFileError, match=r"machines.yaml, line 3: threshold must be"):
        run_blocks(tmp_path)
    assert world.state_file.read_bytes() == committed
    with RunLock(world.state_dir).hold(timeout=0):  # the failed block let go of the lock
        pass
    assert main(["status"]) == 1
    assert "line 3: threshold must be a number in [0, 1), got '0,9'" in capsys.readouterr().err

    operator_env.write_text("machines:\n  - machine: machine2\n    threshold: 0.8\n")
    run_blocks(tmp_path)  # fixed: the next run catches up with the fault
    assert len(messages(world.receiver, "Anomaly", "machine2")) == 1


def test_status_for_a_known_state(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
    capsys,
) -> None:
    operator_env.write_text(
        "machines:\n  - machine: machine1\n    persistence: 5\n", encoding="utf-8"
    )
    story = StoryTelemetry.after_history(world.client, 120)
    story.write(120, overload=["machine2"])
    run_blocks(tmp_path)
    tool(capsys, "mute", "machine3", "--for", "90m", "--reason", "calibration")
    episode = episode_rows(world.client, "machine2")[0]["episode_id"]

    table = tool(capsys, "status")
    lines = table.splitlines()
    assert lines[0].startswith("fleet at ") and "3 machine(s)" in lines[0]
    header = re.split(r"\s{2,}", lines[1])
    assert header == [
        "MACHINE",
        "UNIQUE_ID",
        "STATE",
        "LAST SCORED",
        "WARM-UP",
        "SCORE / THRESHOLD",
        "OPEN EPISODE",
        "MUTED UNTIL",
    ]
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert list(rows) == ["machine1", "machine2", "machine3"]
    assert " ok " in rows["machine1"] and " warm " in rows["machine1"]
    assert " anomaly " in rows["machine2"] and f"{episode} since " in rows["machine2"]
    assert " / 0.80" in rows["machine2"]
    assert " muted " in rows["machine3"]
    assert "machine3: muted: calibration (influx-magic mute by ana)" in lines
    assert any(line.startswith("machine1: persistence 5 (line 2)") for line in lines)


def test_an_action_given_while_influxdb_is_down_applies_and_the_next_run_writes_it(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
    capsys,
) -> None:
    story = StoryTelemetry.after_history(world.client)
    run_blocks(tmp_path)
    world.influx.kill()

    said = tool(capsys, "mute", "machine2", "--for", "1h", "--reason", "pump swap")
    assert "InfluxDB did not take it" in said
    assert "the next pipeline run writes it to anomaly_feedback" in said
    assert [a.written for a in OperatorStore(world.state_dir).read().actions] == [False]

    world.influx.start()
    story.write(120, overload=["machine2"])
    run_blocks(tmp_path)
    assert messages(world.receiver, "Anomaly") == []  # the mute was in force all along
    rows = feedback_rows(world.client)
    assert [(r["machineID"], r["action"], r["reason"]) for r in rows] == [
        ("machine2", "mute", "pump swap")
    ]
    assert [a.written for a in OperatorStore(world.state_dir).read().actions] == [True]


def test_replay_rescores_history_into_its_own_tables_with_todays_feedback(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
    capsys,
) -> None:
    story = StoryTelemetry.after_history(world.client, 150 + 180)
    story.write(150, bump=["machine1"])
    story.write(180, overload=["machine2"])
    run_blocks(tmp_path)
    benign = episode_rows(world.client, "machine1")[0]["episode_id"]
    overload = episode_rows(world.client, "machine2")[0]["episode_id"]
    tool(capsys, "false-alarm", benign)
    production = {t: count_rows(world.client, t) for t in ("anomaly_scores", "anomaly_episodes")}
    committed = world.state_file.read_bytes()
    operator = OperatorStore(world.state_dir).path.read_bytes()
    sent = len(world.receiver.payloads())

    said = tool(capsys, "replay", "--since", "1h")

    assert "episodes: 1 (1 would alert, 0 muted)" in said
    assert f"{overload}  machine2  " in said and "would alert" in said
    assert benign not in said  # today's feedback: the benign pattern no longer opens one
    table = re.search(r"written to (anomaly_scores_replay_[0-9a-f]{8}) ", said).group(1)
    assert count_rows(world.client, table) == story.written
    assert count_rows(world.client, table.replace("scores", "episodes")) == 1
    assert {t: count_rows(world.client, t) for t in production} == production
    assert world.state_file.read_bytes() == committed
    assert OperatorStore(world.state_dir).path.read_bytes() == operator
    assert len(world.receiver.payloads()) == sent


def test_an_experiment_that_alerts_respects_mutes_and_records_nothing_for_operators(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
    capsys,
) -> None:
    story = StoryTelemetry.after_history(world.client, 180)
    run_blocks(tmp_path)  # production knows the machines
    tool(capsys, "mute", "machine2", "--for", "1h", "--reason", "maintenance")
    story.write(180, overload=["machine2", "machine3"])
    operator = OperatorStore(world.state_dir).path.read_bytes()

    run_blocks(tmp_path, threshold=0.79, send_alerts=True)  # an experiment that alerts

    assert messages(world.receiver, "Anomaly", "machine3")
    assert messages(world.receiver, "Anomaly", "machine2") == []
    assert OperatorStore(world.state_dir).path.read_bytes() == operator


def test_with_shards_status_sees_the_fleet_and_one_mute_holds_in_every_shard(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
    capsys,
    monkeypatch,
) -> None:
    monkeypatch.setenv("FLEETWATCH_SHARDS", "3")
    story = StoryTelemetry.after_history(world.client, 180)
    for shard in (0, 1, 2):
        run_blocks(tmp_path, shard=shard)
    homes = {m: shard_of(m, story.provider(m), 3) for m in ("machine1", "machine2")}
    assert homes == {"machine1": 1, "machine2": 0}, "the two machines are in different shards"
    assert not world.state_file.exists(), "each shard keeps its own state file"
    capsys.readouterr()

    table = tool(capsys, "status")
    assert "3 machine(s)" in table.splitlines()[0]
    assert f"shards' state files in {world.state_dir}" in table.splitlines()[0]
    tool(capsys, "mute", "machine2", "--for", "1h", "--reason", "belt change")

    story.write(180, overload=["machine1", "machine2"])
    for shard in (0, 1, 2):
        run_blocks(tmp_path, shard=shard)
    assert messages(world.receiver, "Anomaly", "machine1")
    assert messages(world.receiver, "Anomaly", "machine2") == []
    assert [r["status"] for r in episode_rows(world.client, "machine2")] == ["muted"]
    assert not (world.state_dir / "shards-3" / "shard-0" / "operator").exists()
    capsys.readouterr()
    assert " muted " in next(
        line for line in tool(capsys, "status").splitlines() if line.startswith("machine2 ")
    )


def test_names_with_spaces_quotes_and_commas_work_and_a_shared_machine_id_is_refused(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
    tmp_path: Path,
) -> None:
    odd, provider = "press 2, left", 'O\'Brien "& Co", Ltd'
    fleet = [(odd, provider), ("machine2", "Acme"), ("machine2", "Zeta")]
    start = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(seconds=60)
    rows = [
        {"time": start + pd.Timedelta(seconds=k), "machineID": m, "provider": p}
        | {f: 1.0 + 0.01 * (k % 7) for f in FEATURES}
        for k in range(60)
        for m, p in fleet
    ]
    write_frame(
        world.client,
        pd.DataFrame(rows),
        table="machine_data",
        tags=["machineID", "provider"],
        fields=FEATURES,
    )
    run_blocks(tmp_path)

    def influx_magic(*argv: str) -> subprocess.CompletedProcess:
        """The installed console script, each argument one argv word as a shell passes it."""
        return subprocess.run(
            [str(CONSOLE_SCRIPT), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    done = influx_magic("mute", odd, "--for", "30m", "--reason", 'guard "B", loose')
    assert done.returncode == 0, done.stderr
    assert f"muted {odd} (provider {provider}, " in done.stdout
    assert "unmute 'press 2, left'" in done.stdout  # how to end it, quoted for a shell
    rows = feedback_rows(world.client)
    assert [(r["machineID"], r["provider"], r["reason"]) for r in rows] == [
        (odd, provider, 'guard "B", loose')
    ]

    refused = influx_magic("mute", "machine2", "--for", "30m")
    assert refused.returncode == 1
    assert "'machine2' is the machineID of 2 machines: give the unique_id: " in refused.stderr
    assert "acme-machine2 (provider Acme), zeta-machine2 (provider Zeta)" in refused.stderr
    assert influx_magic("mute", "zeta-machine2", "--for", "30m").returncode == 0

    status = influx_magic("status")
    assert status.returncode == 0, status.stderr
    muted = [line for line in status.stdout.splitlines() if " muted " in line]
    assert [line.split("  ")[0] for line in muted] == ["machine2", odd]


def test_under_mage_run_a_mute_given_with_the_tool_holds_the_alert(
    world: PipelineWorld,  # noqa: F811
    operator_env: Path,
) -> None:
    home = world.dirs["HOME"]
    story = StoryTelemetry.after_history(world.client, 180)
    first = mage_run(home, {"lookback_minutes": 30})
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    muted = subprocess.run(
        [str(CONSOLE_SCRIPT), "mute", "machine2", "--for", "1h", "--reason", "motor swap"],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert muted.returncode == 0, muted.stderr
    story.write(180, overload=["machine2"])
    second = mage_run(home)

    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "not sent: 1 muted" in second.stdout
    assert messages(world.receiver, "Anomaly") == []
    assert [r["status"] for r in episode_rows(world.client, "machine2")] == ["muted"]
