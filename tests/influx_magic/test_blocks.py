"""The five blocks loaded by path and called in order, in this process, against a real
localflux and a local Slack receiver: what each block hands on, when state is committed, how a
failed run is redone, alert delivery faults, the run lock and the runtime variables."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fleetwatch.detector import DetectorConfig
from fleetwatch.state import FleetState
from influx_magic import state_file
from influx_magic.alert_plots import episode_history
from influx_magic.alerts import RetryPolicy
from influx_magic.block_files import BLOCKS, PROJECT
from influx_magic.influx import InfluxUnavailable
from influx_magic.run_context import PipelineSettings, RunVariables
from influx_magic.run_transaction import CONTEXT_KEY, IDLE_RELEASE, PipelineError, state_path
from influx_magic.runlock import RunLock, RunLockBusy
from influx_magic.state_file import FILENAME
from influx_magic.telemetry import TelemetryError, prepare_telemetry, unique_ids
from tests.influx_magic.conftest import PipelineWorld, seed_fault
from tests.influx_magic.helpers import (
    PIPELINE,
    count_rows,
    file_digest,
    load_block,
    messages,
    run_blocks,
    through_parquet,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_runtime_variables_are_parsed_and_bad_ones_named(local_dirs) -> None:
    variables = RunVariables.from_kwargs(
        {"lookback_minutes": "15", "threshold": 0.75, "features": ["power", "load"]}
    )
    assert variables.lookback.total_seconds() == 15 * 60
    assert variables.config.threshold == 0.75 and variables.config.features == ("load", "power")
    state_dir = PipelineSettings.from_env().state_dir
    assert state_dir == local_dirs["FLEETWATCH_STATE_DIR"]
    custom = state_path(state_dir, variables.config)
    assert custom.parent == state_dir
    assert custom.name != "fleetwatch-state.zip"  # not the default configuration
    assert state_path(state_dir, RunVariables.from_kwargs({}).config).name == FILENAME
    with pytest.raises(ValueError, match="threshold must be a number"):
        RunVariables.from_kwargs({"threshold": "high"})
    with pytest.raises(ValueError, match="threshold"):
        RunVariables.from_kwargs({"threshold": 1.5})
    with pytest.raises(ValueError, match="lookback_minutes must be > 0"):
        RunVariables.from_kwargs({"lookback_minutes": 0})
    with pytest.raises(ValueError, match="features"):
        RunVariables.from_kwargs({"features": 42})


def test_transform_keys_sorts_and_drops_bad_rows_with_counts(local_dirs, capsys) -> None:
    t = pd.Timestamp("2024-05-01 10:00:00", tz="UTC")
    second = pd.Timedelta(seconds=1)
    rows = [
        (t + 2 * second, "machine2", "Nordhoff, Weiss & Partner", 80.0, "210"),
        (t, "machine1", "Tanaka Seiki", 75.0, 200.0),
        (t, "machine2", "Nordhoff, Weiss & Partner", 79.0, 205.0),
        (t, "machine2", "Nordhoff, Weiss & Partner", 81.0, 206.0),  # duplicate: kept (last)
        (pd.NaT, "machine1", "Tanaka Seiki", 75.0, 200.0),  # no time
        (t + second, None, "Tanaka Seiki", 75.0, 200.0),  # no machineID
        (t + second, "machine3", "  ", 75.0, 200.0),  # blank provider
        (t + second, "machine1", "Tanaka Seiki", np.inf, "n/a"),  # no finite value
        (t + second, "machine1", "Tanaka Seiki", 76.0, "n/a"),  # one value missing: kept
    ]
    frame = pd.DataFrame(rows, columns=["time", "machineID", "provider", "load", "power"])
    frame["power"] = frame["power"].astype(object)
    block = load_block("transform_data")

    out = block.transform_data(frame)

    assert list(out.columns) == ["time", "machineID", "provider", "unique_id", "load", "power"]
    assert out["unique_id"].tolist() == [
        "nordhoff-weiss-partner-machine2",
        "tanaka-seiki-machine1",
        "tanaka-seiki-machine1",
        "nordhoff-weiss-partner-machine2",
    ]
    assert out["load"].tolist() == [81.0, 75.0, 76.0, 80.0]
    assert out["power"].dtype == np.float64
    np.testing.assert_array_equal(out["power"], [206.0, 200.0, np.nan, 210.0])
    assert out["time"].is_monotonic_increasing
    block.test_output(out)
    printed = capsys.readouterr().out
    for count in ("1 no time", "1 no machineID", "1 no provider", "1 no finite feature value"):
        assert count in printed
    assert "1 duplicate" in printed


def test_transform_rejects_a_frame_without_the_key_columns(local_dirs) -> None:
    with pytest.raises(TelemetryError, match="lacks column"):
        prepare_telemetry(pd.DataFrame({"time": [], "load": []}))


def test_the_run_alerts_plots_exports_and_commits_only_in_the_last_block(
    world: PipelineWorld, tmp_path: Path
) -> None:
    seed_fault(world)
    kwargs = {"pipeline_uuid": "machine_anomaly_detection", "pipeline_run_id": 7, "context": {}}

    loaded = load_block("load_influx_data").load_influx_data(**kwargs)
    assert len(loaded) == world.telemetry.written
    data = load_block("transform_data").transform_data(through_parquet(loaded, tmp_path), **kwargs)
    scored = load_block("detect_anomalies").detect_anomalies(
        through_parquet(data, tmp_path), **kwargs
    )
    checked = load_block("check_anomalies").check_anomalies(
        through_parquet(scored, tmp_path), **kwargs
    )

    # Alerts went out, but nothing is committed before the exporter ran.
    assert not world.state_file.exists()
    anomalies = messages(world.receiver, "Anomaly")
    assert [m["text"].split()[2] for m in anomalies] == ["machine2"]
    assert (
        unique_ids(pd.Series([world.telemetry.provider("machine2")]), pd.Series(["machine2"]))[0]
        in anomalies[0]["text"]
    )
    body = json.dumps(anomalies[0])
    assert "http://plots.example/plots/" in body and ".png" in body
    assert "/pipelines/machine_anomaly_detection/runs/7" in body
    headers = world.receiver.requests[0].headers
    assert headers["Idempotency-Key"].endswith(":opened")

    (plot,) = world.plots.rglob("*.png")  # one message, one plot
    assert plot.parent.name.endswith("-machine2") and plot.name.endswith("-opened.png")
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert f"http://plots.example/plots/{plot.parent.name}/{plot.name}" in body
    inside = checked[checked["in_episode"].astype(bool)]
    assert len(inside) and inside["episode_id"].nunique() == 1
    assert set(inside["machineID"]) == {"machine2"}

    summary = load_block("export_anomaly_scores").export_anomaly_scores(
        through_parquet(checked, tmp_path), **kwargs
    )
    assert world.state_file.exists()
    assert summary["scores_written"] == world.telemetry.written
    assert count_rows(world.client, "anomaly_scores") == world.telemetry.written
    assert count_rows(world.client, "anomaly_episodes") == 1
    flagged = count_rows(world.client, "anomaly_scores", "WHERE is_anomaly = true")
    assert flagged == int(checked["is_anomaly"].sum()) > 0
    # Each score row says what a user needs to query it.
    stored = world.client.query(
        "SELECT unique_id, config_id, warm, dev_load, dev_temperature, episode_id "
        "FROM anomaly_scores WHERE \"machineID\" = 'machine2' AND is_anomaly",
        mode="pandas",
    )
    assert set(stored["unique_id"]) == set(inside["unique_id"])
    assert set(stored["config_id"]) == {summary["config_id"]} and stored["warm"].all()
    assert stored["dev_load"].abs().max() > 3 and stored["episode_id"].notna().all()
    assert not list((world.state_dir / "pending").glob("*.state"))


def test_a_run_with_no_new_data_posts_nothing_and_scores_nothing_twice(
    world: PipelineWorld, tmp_path: Path
) -> None:
    seed_fault(world)
    run_blocks(tmp_path)
    assert len(world.receiver.requests) == 1
    before = state_file.load(world.state_file)

    summary = run_blocks(tmp_path)

    assert summary["scores_written"] == 0
    assert len(world.receiver.requests) == 1
    after = state_file.load(world.state_file)
    assert_same_models(after, before)
    assert after.watermark == before.watermark
    assert after.episodes.to_json() == before.episodes.to_json()

    world.telemetry.write(180)  # the fault is cleared: quiet, but not for ALERT_RECUR_GAP_MIN
    run_blocks(tmp_path)
    assert messages(world.receiver, "Resolved") == []
    world.telemetry.write(480)  # quiet for 11 minutes now
    run_blocks(tmp_path)
    resolved = messages(world.receiver, "Resolved")
    assert [m["text"].split()[2] for m in resolved] == ["machine2"]
    assert len(world.receiver.requests) == 2
    assert count_rows(world.client, "anomaly_scores") == world.telemetry.written
    assert count_rows(world.client, "anomaly_episodes") == 1  # one row per episode, updated


def test_a_run_failing_in_the_exporter_changes_nothing_and_the_next_run_catches_up(
    world: PipelineWorld, tmp_path: Path
) -> None:
    history = world.telemetry.write(540)
    run_blocks(tmp_path)
    committed = file_digest(world.state_file)
    fault = world.telemetry.write(180, overload=["machine2"])
    run = {"context": {}}  # what Mage shares between the blocks of one run
    output = load_block("load_influx_data").load_influx_data(**run)
    for name in ("transform_data", "detect_anomalies", "check_anomalies"):
        output = getattr(load_block(name), name)(through_parquet(output, tmp_path), **run)
    assert len(messages(world.receiver, "Anomaly")) == 1
    world.influx.kill()

    with pytest.raises(InfluxUnavailable, match="not reachable while writing"):
        load_block("export_anomaly_scores").export_anomaly_scores(output, **run)

    assert file_digest(world.state_file) == committed  # models, episodes, watermark unchanged
    with RunLock(world.state_dir).hold(timeout=0):  # the failed block let go of the lock
        pass

    world.influx.start()
    more = world.telemetry.write(60, overload=["machine2"])
    summary = run_blocks(tmp_path)

    assert len(messages(world.receiver, "Anomaly")) == 1  # not sent again
    assert summary["scores_written"] == len(fault) + len(more)  # nothing lost
    assert count_rows(world.client, "anomaly_scores") == world.telemetry.written
    # Nothing was learned twice: the models equal those of the two successful runs' batches.
    reference = FleetState.new()
    for batch in (history, pd.concat([fault, more], ignore_index=True)):
        keyed = batch.assign(unique_id=unique_ids(batch["provider"], batch["machineID"]))
        reference.detector.score_frame(keyed.sort_values(["time", "unique_id"], kind="stable"))
    assert_same_models(state_file.load(world.state_file), reference)


def test_a_run_far_behind_reads_catchup_minutes_says_so_and_the_next_runs_go_on(
    world: PipelineWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A first run over a long history (or one after an outage) reads a bounded slice,
    FLEETWATCH_CATCHUP_MINUTES of data, logs how far behind it is, and the next runs go on
    from there until they reach the newest point; nothing is scored twice or lost."""
    monkeypatch.setenv("FLEETWATCH_CATCHUP_MINUTES", "2")
    world.telemetry.write(300)
    written, behind = [], True
    while behind:
        assert len(written) < 6, written  # 300 s in slices of 2 minutes: a few runs at most
        written.append(run_blocks(tmp_path)["scores_written"])
        behind = "; catching up: " in capsys.readouterr().out
    assert written[0] == 120 * 3  # the first slice: two minutes of the three machines
    assert len(written) > 2 and all(written)  # each run went on where the last one stopped
    assert sum(written) == count_rows(world.client, "anomaly_scores") == world.telemetry.written


def test_a_message_plot_shows_the_history_before_the_episode_and_does_without_it(
    world: PipelineWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = world.telemetry.write(540)
    run_blocks(tmp_path)  # the healthy minutes are scored and exported
    world.telemetry.write(180, overload=["machine2"])
    run = {"context": {}}
    output = load_block("load_influx_data").load_influx_data(**run)
    for name in ("transform_data", "detect_anomalies"):
        output = getattr(load_block(name), name)(through_parquet(output, tmp_path), **run)

    world.influx.kill()  # a plot is not worth an alert: it goes out without the history
    load_block("check_anomalies").check_anomalies(through_parquet(output, tmp_path), **run)
    assert len(messages(world.receiver, "Anomaly")) == 1
    assert "(without history: InfluxDB at" in capsys.readouterr().out
    (plot,) = world.plots.rglob("*.png")
    assert plot.name.endswith("-opened.png") and plot.parent.name.endswith("-machine2")
    world.influx.start()

    (alert,) = run["context"][CONTEXT_KEY].alerts()
    rows = output[(output["status"] == "scored") & (output["unique_id"] == alert.unique_id)]
    features = DetectorConfig().features
    window = timedelta(minutes=30)
    shown, note = episode_history(PipelineSettings.from_env().influx, alert, rows, features, window)

    assert note == ""
    first = rows["time"].min()
    assert set(shown["unique_id"]) == {alert.unique_id}
    assert shown["time"].max() < first and shown["time"].min() >= alert.start - window
    earlier = history[(history["machineID"] == "machine2") & (history["time"] < first)]
    assert len(shown) == len(earlier) > 0  # the provider's comma and ampersand were bound
    assert shown["score"].notna().all()  # with the scores the first run exported
    assert not shown["is_anomaly"].any()


def assert_same_models(state: FleetState, reference: FleetState) -> None:
    saved = state.detector.arrays()
    arrays = reference.detector.arrays()
    assert sorted(saved) == sorted(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(saved[name], array, err_msg=name)


def test_a_failing_webhook_leaves_the_alert_in_the_outbox_for_the_next_run(
    world: PipelineWorld, tmp_path: Path
) -> None:
    seed_fault(world)
    attempts = RetryPolicy().attempts
    world.receiver.respond_with(500, "server error", times=attempts)
    run_blocks(tmp_path)
    assert len(world.receiver.requests) == attempts  # retried within the run, then queued
    assert {r.headers["Idempotency-Key"] for r in world.receiver.requests} == {
        world.receiver.requests[0].headers["Idempotency-Key"]
    }
    outbox = json.loads((world.state_dir / "alerts" / "slack" / "outbox.json").read_text())
    assert len(outbox["messages"]) == 1
    assert world.state_file.exists()  # the run itself succeeded

    run_blocks(tmp_path)
    run_blocks(tmp_path)

    delivered = world.receiver.requests[attempts:]
    assert len(delivered) == 1 and delivered[0].json()["text"].startswith("Anomaly on machine2")


def test_a_429_with_retry_after_is_honoured_and_the_alert_arrives_once(
    world: PipelineWorld, tmp_path: Path
) -> None:
    seed_fault(world)
    world.receiver.respond_with(429, "rate limited", {"Retry-After": "2"})
    run_blocks(tmp_path)
    first, second = world.receiver.requests  # the refused try and the delivery
    assert second.received_at - first.received_at >= 2.0
    assert second.body == first.body and second.json()["text"].startswith("Anomaly on machine2")
    outbox = json.loads((world.state_dir / "alerts" / "slack" / "outbox.json").read_text())
    assert outbox["messages"] == []


def test_a_second_run_waits_for_the_lock_and_then_stops_without_changing_anything(
    world: PipelineWorld, tmp_path: Path
) -> None:
    seed_fault(world)
    holder = RunLock(world.state_dir).hold(timeout=0, what="scheduled run 41")
    with holder, pytest.raises(RunLockBusy, match="scheduled run 41"):
        run_blocks(tmp_path, lock_timeout_seconds=0.3)
    assert not world.state_file.exists() and world.receiver.requests == []
    run_blocks(tmp_path)
    assert world.state_file.exists()
    assert len(messages(world.receiver, "Anomaly", "machine2")) == 1


def test_the_loader_alone_leaves_nothing_and_lets_go_of_the_lock_soon(
    world: PipelineWorld, tmp_path: Path
) -> None:
    """What Mage's editor does when a user runs the loader to look at its rows."""
    seed_fault(world)
    editor = {"context": {}}  # the editor's kernel keeps its context between block runs
    assert len(load_block("load_influx_data").load_influx_data(**editor)) > 0
    assert sorted(p.name for p in world.state_dir.iterdir()) == ["run.lock"]
    started = time.monotonic()
    with RunLock(world.state_dir).hold(timeout=IDLE_RELEASE + 30):  # free once the run idles
        waited = time.monotonic() - started
    assert IDLE_RELEASE - 2 < waited < IDLE_RELEASE + 10
    run_blocks(tmp_path)  # a pipeline run meanwhile: completes and commits
    assert world.state_file.exists()
    # The editor's run goes on: the committed state moved, so its detector stops and says so.
    with pytest.raises(PipelineError, match="run the pipeline again from load_influx_data"):
        load_block("detect_anomalies").detect_anomalies(pd.DataFrame(), **editor)


def test_runtime_variables_keep_their_own_models(world: PipelineWorld, tmp_path: Path) -> None:
    seed_fault(world)
    summary = run_blocks(tmp_path, features=["power", "load"], threshold=0.7)
    assert not world.state_file.exists()
    custom = Path(summary["state"])
    assert custom.exists() and custom.parent == world.state_dir
    assert state_file.load(custom).detector.config.features == ("load", "power")
    run_blocks(tmp_path)
    assert world.state_file.exists() and custom.exists()


def test_an_experiment_alerts_only_when_asked_and_then_on_its_own_ledger(
    world: PipelineWorld, tmp_path: Path
) -> None:
    seed_fault(world)
    quiet = run_blocks(tmp_path, threshold=0.79)
    assert world.receiver.requests == [] and quiet["scores_table"] != "anomaly_scores"
    run_blocks(tmp_path)  # production alerts as usual
    asked = run_blocks(tmp_path, threshold=0.78, send_alerts=True)
    anomalies = messages(world.receiver, "Anomaly", "machine2")
    assert len(anomalies) == 2  # production's, and the experiment's (its own ledger)
    assert (world.state_dir / "experiments" / asked["config_id"] / "alerts").is_dir()
    assert count_rows(world.client, "anomaly_scores") == world.telemetry.written


def test_later_blocks_need_the_run_the_loader_started(local_dirs) -> None:
    scored = pd.DataFrame({"status": pd.Series([], dtype=object)})
    with pytest.raises(PipelineError, match="run the pipeline from load_influx_data"):
        load_block("export_anomaly_scores").export_anomaly_scores(scored, context={})


def test_the_commit_refuses_a_state_another_run_committed_meanwhile(
    world: PipelineWorld, tmp_path: Path
) -> None:
    world.telemetry.write(300)
    run = {"context": {}}  # what Mage shares between the blocks of one run
    output = load_block("load_influx_data").load_influx_data(**run)
    for name in ("transform_data", "detect_anomalies", "check_anomalies"):
        output = getattr(load_block(name), name)(through_parquet(output, tmp_path), **run)
    state_file.save(FleetState.new(), world.state_file)  # someone else committed

    with pytest.raises(PipelineError, match="changed while this run was in progress"):
        load_block("export_anomaly_scores").export_anomaly_scores(output, **run)
    assert state_file.load(world.state_file).watermark is None


def test_the_pipeline_defaults_are_the_detector_defaults() -> None:
    """Otherwise a plain run would keep its models under a configuration-specific file name."""
    meta = yaml.safe_load((PROJECT / "pipelines" / PIPELINE / "metadata.yaml").read_text())
    variables = meta["variables"]
    assert variables["threshold"] == DetectorConfig().threshold
    assert set(variables["features"]) == set(DetectorConfig().features)
    config = RunVariables.from_kwargs(variables).config
    assert state_path(Path("state"), config).name == FILENAME
    assert [b["uuid"] for b in meta["blocks"]] == list(BLOCKS)
    for upstream, block in zip(meta["blocks"], meta["blocks"][1:], strict=False):
        assert block["upstream_blocks"] == [upstream["uuid"]]
        assert upstream["downstream_blocks"] == [block["uuid"]]
    assert meta["run_pipeline_in_one_process"] is True
    assert meta["settings"]["triggers"]["save_in_code_automatically"] is False
