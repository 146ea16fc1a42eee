"""End to end through `mage run`: localflux with seeded telemetry (an overload on machine2), the
real Mage project, and a local Slack receiver. Each `mage run` costs several seconds, so each
test makes the few runs its story needs."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.influx_magic.conftest import PipelineWorld, seed_fault
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
    assert "0 point(s) scored" in second.stdout
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
