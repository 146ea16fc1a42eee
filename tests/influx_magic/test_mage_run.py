"""End to end through `mage run`: localflux with seeded telemetry (an overload on machine2), the
real Mage project, and a local Slack receiver. Each `mage run` costs several seconds, so each
test makes the few runs its story needs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from influx_magic import local_wiring
from tests.influx_magic.conftest import HISTORY_SECONDS, PipelineWorld, seed_fault
from tests.influx_magic.helpers import count_rows, file_digest, mage_run, messages
from tests.support import PYTHON, REPO_ROOT

pytestmark = pytest.mark.slow


def assert_completed(result) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Pipeline run completed." in result.stdout


def test_mage_run_alerts_once_per_fault_and_once_when_it_resolves(world: PipelineWorld) -> None:
    seed_fault(world)

    first = mage_run(world.dirs["HOME"], {"lookback_minutes": 30})

    assert_completed(first)
    anomalies = messages(world.receiver, "Anomaly")
    assert len(anomalies) == 1 and messages(world.receiver, "Anomaly", "machine2") == anomalies
    for healthy in ("machine1", "machine3"):
        assert healthy not in json.dumps(world.receiver.payloads())
    assert "/runs/" not in json.dumps(anomalies)  # `mage run` has no run page to link
    (opened,) = world.plots.rglob("*.png")  # one message, one plot
    assert opened.parent.name.endswith("-machine2") and opened.name.endswith("-opened.png")
    picture = file_digest(opened)
    assert count_rows(world.client, "anomaly_scores") == world.telemetry.written
    assert count_rows(world.client, "anomaly_episodes") == 1

    second = mage_run(world.dirs["HOME"])

    assert_completed(second)
    assert "0 point(s) scored of 0 machine(s)" in second.stdout
    assert len(world.receiver.requests) == 1
    assert count_rows(world.client, "anomaly_scores") == world.telemetry.written

    world.telemetry.write(660)  # the overload is over: quiet for more than ALERT_RECUR_GAP_MIN
    third = mage_run(world.dirs["HOME"])

    assert_completed(third)
    resolved = messages(world.receiver, "Resolved")
    assert len(resolved) == 1 and messages(world.receiver, "Resolved", "machine2") == resolved
    assert len(world.receiver.requests) == 2
    assert count_rows(world.client, "anomaly_scores") == world.telemetry.written
    # Each message links its own picture, and an earlier one never changes.
    assert file_digest(opened) == picture
    (closing,) = opened.parent.glob("*-resolved.png")
    assert closing.name.replace("-resolved", "-opened") == opened.name
    links = [re.search(r"<(http://plots\.example/plots/[^|>]+)\|Plot>", json.dumps(m)).group(1)
             for m in (*anomalies, *resolved)]  # fmt: skip
    assert [link.rsplit("/", 1)[1] for link in links] == [opened.name, closing.name]


def test_mage_run_with_influxdb_down_fails_clearly_and_the_next_run_catches_up(
    world: PipelineWorld,
) -> None:
    seed_fault(world)
    world.influx.kill()

    failed = mage_run(world.dirs["HOME"])

    assert failed.returncode == 1
    output = " ".join((failed.stdout + failed.stderr).split())  # Mage wraps tracebacks
    assert "InfluxUnavailable" in output and "is not reachable" in output
    assert file_digest(world.state_file) is None  # nothing committed
    assert world.receiver.requests == []

    world.influx.start()
    caught_up = mage_run(world.dirs["HOME"])

    assert_completed(caught_up)
    assert len(messages(world.receiver, "Anomaly", "machine2")) == 1
    assert count_rows(world.client, "anomaly_scores") == world.telemetry.written


EDITOR = """
import sys
from influx_magic.block_files import load_block
rows = load_block("load_influx_data")(context={})  # prints its own log line first
print(f"loaded {len(rows)}", flush=True)
sys.stdin.readline()  # stay alive, as Mage's editor kernel does, until the test is done
"""


def test_the_loader_run_alone_in_a_live_process_does_not_hold_up_mage_run(
    world: PipelineWorld,
) -> None:
    """Mage's editor: a user runs the loader block to look at its rows, its kernel lives on."""
    seed_fault(world)
    editor = subprocess.Popen(
        [PYTHON, "-c", EDITOR], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert editor.stdout.readline().startswith("load_influx_data: 2160 row(s)")
        assert editor.stdout.readline() == "loaded 2160\n"
        started = time.monotonic()
        result = mage_run(world.dirs["HOME"])  # waits at most IDLE_RELEASE for the editor
        assert_completed(result)
        assert time.monotonic() - started < 120
        assert editor.poll() is None  # the editor's kernel is still there
    finally:
        editor.stdin.close()
        editor.wait(timeout=30)
    assert world.state_file.exists()
    assert len(messages(world.receiver, "Anomaly", "machine2")) == 1


def readme_experiment() -> tuple[dict, str]:
    """The README's experiment command (its runtime variables) and its comparison SQL."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Experiments") :]
    variables = json.loads(re.search(r"--runtime-vars '([^']+)'", section).group(1))
    sql = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    return variables, sql


def table_contents(client, table: str) -> list[tuple]:
    frame = client.query(f'SELECT * FROM "{table}" ORDER BY time, "machineID"', mode="pandas")
    return sorted(map(tuple, frame.astype(str).to_numpy().tolist()))


def test_the_readme_experiment_leaves_production_exactly_as_it_was(world: PipelineWorld) -> None:
    seed_fault(world)
    assert_completed(mage_run(world.dirs["HOME"], {"lookback_minutes": 30}))
    assert len(messages(world.receiver, "Anomaly", "machine2")) == 1
    before = {
        "scores": table_contents(world.client, "anomaly_scores"),
        "episodes": table_contents(world.client, "anomaly_episodes"),
        "plots": {p.name: file_digest(p) for p in world.plots.rglob("*.png")},
        "requests": len(world.receiver.requests),
        "state": file_digest(world.state_file),
    }

    variables, sql = readme_experiment()
    experiment = mage_run(world.dirs["HOME"], variables)

    assert_completed(experiment)
    config_id = re.search(r"experiment (\w{10}) \(", experiment.stdout).group(1)
    assert f"scores in anomaly_scores_{config_id}" in experiment.stdout
    assert "no alerts (runtime variable send_alerts=true sends them)" in experiment.stdout
    assert table_contents(world.client, "anomaly_scores") == before["scores"]
    assert table_contents(world.client, "anomaly_episodes") == before["episodes"]
    production_plots = {p.name: file_digest(p) for p in world.plots.rglob("*.png")
                        if "experiments" not in p.parts}  # fmt: skip
    assert production_plots == before["plots"]
    assert len(world.receiver.requests) == before["requests"]
    assert file_digest(world.state_file) == before["state"]

    rows = world.client.query(
        f'SELECT DISTINCT config_id FROM "anomaly_scores_{config_id}"', mode="pandas"
    )
    assert rows["config_id"].tolist() == [config_id]
    assert count_rows(world.client, f"anomaly_episodes_{config_id}") >= 1  # machine2's overload
    assert list((world.plots / "experiments" / config_id).rglob("*.png"))
    compared = world.client.query(sql.replace("bc7635203b", config_id), mode="pandas")
    assert compared["machineID"].tolist() == ["machine1", "machine2", "machine3"]
    assert (compared["points"] > 0).all()
    assert compared.set_index("machineID").loc["machine2", "production_anomalies"] > 0


@pytest.mark.parametrize("gap", [30, 120])
def test_a_restart_of_the_simulator_gives_no_episode(world: PipelineWorld, gap: int) -> None:
    """`make run` stopped and started again: the simulator's signals go on after a gap."""
    world.telemetry.write(HISTORY_SECONDS)
    world.telemetry.restart(gap)
    world.telemetry.write(4 * 60)

    result = mage_run(world.dirs["HOME"], {"lookback_minutes": 30})

    assert_completed(result)
    assert "0 opened, 0 recurring, 0 resolved" in result.stdout
    assert world.receiver.requests == []
    assert count_rows(world.client, "anomaly_episodes") == 0


def test_an_alert_without_a_channel_waits_and_the_channel_make_run_wired_gets_it_once(
    world: PipelineWorld, tmp_path
) -> None:
    """A headless `mage run` in a shell without SLACK_WEBHOOK_URL queues its alerts; the next
    run that has a channel (here the one a running `make run` recorded) delivers them, once
    and in order."""
    seed_fault(world)
    wiring = tmp_path / "make-run.env"
    shell = {  # no .env, no make run
        "SLACK_WEBHOOK_URL": "",
        "INFLUX_MAGIC_ROOT": str(tmp_path),
        "MAKE_RUN_WIRING_FILE": str(wiring),
    }

    first = mage_run(world.dirs["HOME"], {"lookback_minutes": 30}, env=shell)

    assert_completed(first)
    assert "1 waiting in the outbox: SLACK_WEBHOOK_URL is empty" in first.stdout
    world.telemetry.write(660)  # the fault ends and stays away for ALERT_RECUR_GAP_MIN
    second = mage_run(world.dirs["HOME"], env=shell)
    assert_completed(second)
    assert "2 waiting in the outbox" in second.stdout
    assert world.receiver.requests == []

    # `make run` comes up in another shell: it records the channel it wired.
    local_wiring.record({"SLACK_WEBHOOK_URL": world.receiver.url}, os.getpid(), wiring)
    third = mage_run(world.dirs["HOME"], env=shell)

    assert_completed(third)
    assert [p["text"].split()[0] for p in world.receiver.payloads()] == ["Anomaly", "Resolved"]
    assert "machine2 (" in world.receiver.payloads()[0]["text"]
    fourth = mage_run(world.dirs["HOME"], env=shell)
    assert_completed(fourth)
    assert len(world.receiver.requests) == 2  # exactly once


def test_a_fault_in_bursts_is_one_announced_story(world: PipelineWorld) -> None:
    """Spike bursts (5-10 s every 30-60 s) for five minutes: one "Anomaly", one "Resolved"
    once the machine has been quiet for ALERT_RECUR_GAP_MIN, every burst in that one episode,
    and no episode that was never announced."""
    world.telemetry.write(HISTORY_SECONDS)
    world.telemetry.write(5 * 60, overload=["machine2"], kind="spike")
    during = mage_run(world.dirs["HOME"], {"lookback_minutes": 30})
    assert_completed(during)
    world.telemetry.write(11 * 60, kind="spike")  # the bursts stop
    after = mage_run(world.dirs["HOME"])
    assert_completed(after)

    texts = [p["text"] for p in world.receiver.payloads()]
    assert [t.split()[0] for t in texts] == ["Anomaly", "Resolved"], texts
    assert all("machine2 (" in t for t in texts)
    episodes = world.client.query(
        'SELECT "machineID", status, bursts, episode_id FROM anomaly_episodes', mode="pandas"
    )
    assert episodes["machineID"].tolist() == ["machine2"]  # one story, nothing unannounced
    (story,) = episodes.itertuples()
    assert story.status == "resolved" and story.bursts > 1
    in_bursts = world.client.query(
        "SELECT DISTINCT episode_id FROM anomaly_scores WHERE episode_id IS NOT NULL",
        mode="pandas",
    )
    assert in_bursts["episode_id"].tolist() == [story.episode_id]
