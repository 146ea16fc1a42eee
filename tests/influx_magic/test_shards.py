"""Sharded runs against localflux: N shards give exactly the one-shard results, a failing shard
leaves the others' commits and is redone, re-partitioning keeps models and undelivered alerts."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fleetwatch.state import FleetState
from influx_magic.block_files import run_pipeline
from influx_magic.influx import InfluxUnavailable
from influx_magic.run_transaction import PipelineError
from influx_magic.shards import Shard, layout, main, repartition, shard_of
from tests.influx_magic.helpers import Telemetry, point_run_at_influx
from tests.support import free_port

MACHINES = 8
FAULTY = ["machine2", "machine5"]


@pytest.fixture
def fleet(localflux_server, slack_receiver, tmp_path):
    """Eight simulated machines on a fresh localflux, and the environment of a run."""
    client = localflux_server.client()
    telemetry = Telemetry(client, start=time.time() - 30 * 60, machines=MACHINES)
    env = {
        "INFLUX_HOST": localflux_server.url,
        "INFLUX_DATABASE": localflux_server.database,
        "INFLUX_TOKEN": localflux_server.token or "",
        "SLACK_WEBHOOK_URL": slack_receiver.url,
        "PUBLIC_BASE_URL": "http://plots.example",
        "ALERT_DIGEST_MIN": "10",
        "PLOT_HISTORY_MIN": "0",
        "FLEETWATCH_OUTPUT_DIR": str(tmp_path / "plots"),
    }
    yield telemetry, env
    client.close()


def run(env: Mapping[str, str], shard: int | None = None) -> tuple[pd.DataFrame, dict]:
    """The five block files in process, as `mage run` calls them, with `env` as the
    environment; the exported rows and the exporter's summary."""
    outputs: dict[str, Any] = {}

    def step(name: str, call):
        outputs[name] = call()
        return outputs[name]

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        for name, value in env.items():
            patch.setenv(name, value)
        summary = run_pipeline({} if shard is None else {"shard": shard}, step=step)
    checked = outputs["check_anomalies"]
    rows = checked[checked["status"] == "scored"]
    return rows[["unique_id", "time", "score", "is_anomaly", "episode_id"]], summary


def run_all_shards(env: Mapping[str, str], count: int) -> tuple[pd.DataFrame, list]:
    frames, events = [], []
    for index in range(count):
        rows, summary = run(env, index)
        frames.append(rows)
        events += summary["events"]
    return pd.concat(frames, ignore_index=True), events


def ordered(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(["unique_id", "time"]).reset_index(drop=True)


def ledger_keys(folder: Path) -> set[str]:
    path = folder / "alerts" / "slack" / "ledger.json"
    return set(json.loads(path.read_text())["delivered"]) if path.exists() else set()


def outbox_keys(folder: Path) -> set[str]:
    path = folder / "alerts" / "slack" / "outbox.json"
    return {m["key"] for m in json.loads(path.read_text())["messages"]} if path.exists() else set()


def machines_of(state_root: Path, count: int) -> dict[int, list[str]]:
    found = {}
    for index in range(count):
        path = Shard(index, count).folder(state_root) / "fleetwatch-state.zip"
        if path.exists():
            found[index] = FleetState.from_bytes(path.read_bytes()).detector.machines
    return found


def test_three_shards_give_exactly_the_results_of_one(fleet, tmp_path) -> None:
    telemetry, env = fleet
    one = {**env, "FLEETWATCH_STATE_DIR": str(tmp_path / "one"), "FLEETWATCH_SHARDS": "1"}
    three = {**env, "FLEETWATCH_STATE_DIR": str(tmp_path / "three"), "FLEETWATCH_SHARDS": "3"}
    # healthy history; a fault on two machines; it goes on; then quiet until they resolve
    # (ALERT_RECUR_GAP_MIN, 10 minutes, after their last anomalous point)
    rounds = [(9 * 60, []), (3 * 60, FAULTY), (2 * 60, FAULTY), (11 * 60, [])]
    all_events = []
    for seconds, faulty in rounds:
        telemetry.write(seconds, overload=faulty)
        rows_one, summary_one = run(one)
        rows_three, events_three = run_all_shards(three, 3)
        pd.testing.assert_frame_equal(ordered(rows_three), ordered(rows_one))
        assert sorted(events_three) == sorted(summary_one["events"])
        all_events += summary_one["events"]

    assert {e.split()[0] for e in all_events} == {"opened", "resolved"}  # the scenario alerts
    by_shard = machines_of(tmp_path / "three", 3)
    assert len(by_shard) == 3 and sum(map(len, by_shard.values())) == MACHINES
    for index, keys in by_shard.items():  # every machine where its hash puts it
        state = FleetState.from_bytes(
            (Shard(index, 3).folder(tmp_path / "three") / "fleetwatch-state.zip").read_bytes()
        )
        for key in keys:
            machine, provider = state.extra["machines"][key]
            assert shard_of(machine, provider, 3) == index
    delivered = set().union(
        *(ledger_keys(Shard(i, 3).folder(tmp_path / "three")) for i in range(3))
    )
    assert delivered == ledger_keys(tmp_path / "one") != set()
    assert layout(tmp_path / "three") == 3


def test_a_failing_shard_leaves_the_others_committed_and_is_redone(fleet, tmp_path) -> None:
    telemetry, env = fleet
    root = tmp_path / "state"
    sharded = {**env, "FLEETWATCH_STATE_DIR": str(root), "FLEETWATCH_SHARDS": "3"}
    telemetry.write(6 * 60)
    run(sharded, 0)
    # Shard 1's export finds InfluxDB gone: the run fails and commits nothing.
    gone = f"http://127.0.0.1:{free_port()}"
    checked = None
    context: dict = {}

    def fail_in_export(name: str, call):
        nonlocal checked
        if name == "export_anomaly_scores":
            point_run_at_influx(context, gone)
        result = call()
        checked = result if name == "check_anomalies" else checked
        return result

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        for name, value in sharded.items():
            patch.setenv(name, value)
        with pytest.raises(InfluxUnavailable):
            run_pipeline({"shard": 1, "context": context}, step=fail_in_export)
    rows_two, _ = run(sharded, 2)
    committed = machines_of(root, 3)
    assert set(committed) == {0, 2}, "shard 1 committed nothing; shards 0 and 2 kept theirs"

    telemetry.write(60)
    rows_redone, _ = run(sharded, 1)
    assert rows_redone["time"].nunique() == 7 * 60, "shard 1 redoes the minutes it missed"
    assert set(rows_redone["unique_id"]) == set(checked["unique_id"])
    rows_next, _ = run(sharded, 2)
    assert rows_next["time"].nunique() == 60, "shard 2 goes on from its own watermark"
    assert set(machines_of(root, 3)) == {0, 1, 2}


def test_repartition_from_two_to_three_keeps_models_and_undelivered_alerts(
    fleet, slack_receiver, tmp_path
) -> None:
    telemetry, env = fleet
    root = tmp_path / "state"
    two = {**env, "FLEETWATCH_STATE_DIR": str(root), "FLEETWATCH_SHARDS": "2"}
    telemetry.write(9 * 60)
    run_all_shards(two, 2)
    slack_receiver.respond_with(400, "invalid_payload", times=50)  # Slack refuses for now
    telemetry.write(3 * 60, overload=FAULTY)
    run_all_shards(two, 2)
    waiting = set().union(*(outbox_keys(Shard(i, 2).folder(root)) for i in range(2)))
    assert len(waiting) >= len(FAULTY)
    before = {
        key: (index, counter)
        for index in range(2)
        for key, counter in _counters(Shard(index, 2).folder(root)).items()
    }
    open_before = _open_episodes(root, 2)
    assert open_before, "the faults should leave episodes open"

    # A run configured for 3 shards refuses the 2-shard state dir, changing nothing.
    three = {**two, "FLEETWATCH_SHARDS": "3"}
    with pytest.raises(PipelineError, match="repartition --to 3"):
        run(three, 0)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["--state-dir", str(root), "repartition", "--to", "3"]) == 0
    assert "from 2 to 3" in out.getvalue()

    assert layout(root) == 3 and not (root / "shards-2").exists()
    after = {
        key: (index, counter)
        for index in range(3)
        for key, counter in _counters(Shard(index, 3).folder(root)).items()
    }
    assert {k: c for k, (_, c) in after.items()} == {k: c for k, (_, c) in before.items()}
    assert _open_episodes(root, 3) == open_before
    assert outbox_keys(Shard(0, 3).folder(root)) == waiting
    with pytest.raises(PipelineError, match="repartition --to 2"):
        run(two, 0)

    # The next runs deliver what waited and go on with the same models.
    slack_receiver._queued.clear()
    telemetry.write(60, overload=FAULTY)
    run_all_shards(three, 3)
    delivered = set().union(*(ledger_keys(Shard(i, 3).folder(root)) for i in range(3)))
    assert waiting <= delivered
    assert not any(outbox_keys(Shard(i, 3).folder(root)) for i in range(3))
    assert repartition(root, 3).describe().startswith("re-partitioned from 3 to 3")


def _counters(folder: Path) -> dict[str, int]:
    """Points each machine's model has learned: a model moved whole keeps its count."""
    state = FleetState.from_bytes((folder / "fleetwatch-state.zip").read_bytes())
    counters = state.detector.arrays()["masses_counter"]
    return dict(zip(state.detector.machines, np.asarray(counters).tolist(), strict=True))


def _open_episodes(root: Path, count: int) -> dict[str, Any]:
    found = {}
    for index in range(count):
        path = Shard(index, count).folder(root) / "fleetwatch-state.zip"
        state = FleetState.from_bytes(path.read_bytes())
        found.update({k: e.episode_id for k, e in state.episodes.open.items()})
    return found
