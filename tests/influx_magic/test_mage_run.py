"""End to end through `mage run`: localflux with seeded telemetry (an overload on machine2), the
real Mage project, and a local Slack receiver. Each `mage run` costs several seconds, so each
test makes the few runs its story needs."""

from __future__ import annotations

import json
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
    assert [p.name.endswith("-machine2.png") for p in world.plots.glob("*.png")] == [True]
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
