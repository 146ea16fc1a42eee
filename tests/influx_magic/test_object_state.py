"""The state dir as an object-store URL, against moto's S3 server (a real HTTP server, run from
.venv-moto): the same all-or-nothing commit and stale-writer detection as a local state dir."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from fleetwatch.state import FleetState
from influx_magic.block_files import run_pipeline
from influx_magic.influx import InfluxUnavailable
from influx_magic.object_state import ObjectState
from influx_magic.run_transaction import PipelineError
from tests.influx_magic.helpers import Telemetry, messages, point_run_at_influx
from tests.support import REPO_ROOT, free_port

MOTO_SERVER = REPO_ROOT / ".venv-moto" / "bin" / "moto_server"
BUCKET = "fleet-state"


@pytest.fixture
def s3(start_process, port_factory, monkeypatch, tmp_path):
    """moto's S3 server on a free port with one bucket; the AWS settings pointing at it."""
    if not MOTO_SERVER.exists():
        pytest.skip(".venv-moto is missing: `make setup` creates it (moto[server], own env)")
    port = port_factory()
    start_process(
        "moto_server",
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        url=f"http://127.0.0.1:{port}/moto-api/",
        timeout=60,
    )
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    fs.call_s3("create_bucket", Bucket=BUCKET)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the local mirrors go here
    return fs


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    """Where FLEETWATCH_STATE_DIR points: a local folder, or a prefix in moto's S3."""
    if request.param == "local":
        return str(tmp_path / "state"), None
    fs = request.getfixturevalue("s3")
    return f"s3://{BUCKET}/fleet/{tmp_path.name}", fs


@pytest.fixture
def fleet(localflux_server, slack_receiver, tmp_path, backend):
    location, fs = backend
    client = localflux_server.client()
    telemetry = Telemetry(client, start=time.time() - 20 * 60)
    env = {
        "INFLUX_HOST": localflux_server.url,
        "INFLUX_DATABASE": localflux_server.database,
        "SLACK_WEBHOOK_URL": slack_receiver.url,
        "PUBLIC_BASE_URL": "http://plots.example",
        "PLOT_HISTORY_MIN": "0",
        "FLEETWATCH_OUTPUT_DIR": str(tmp_path / "plots"),
        "FLEETWATCH_STATE_DIR": location,
        "CHECKS_FILE": str(tmp_path / "checks.yaml"),  # absent: no declared checks
    }
    yield telemetry, env, fs
    client.close()


def run(env: dict[str, str], fail_export_with: str | None = None) -> dict:
    """The five block files in process with `env` as the environment; the exporter's summary.
    `fail_export_with`: an InfluxDB host the exporter alone talks to (to make it fail)."""
    context: dict = {}

    def step(name: str, call):
        if name == "export_anomaly_scores" and fail_export_with:
            point_run_at_influx(context, fail_export_with)
        return call()

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        for key, value in env.items():
            patch.setenv(key, value)
        return run_pipeline({"context": context}, step=step)


def committed(env: dict[str, str], fs) -> bytes | None:
    """The committed state as the store holds it (not the mirror)."""
    location = env["FLEETWATCH_STATE_DIR"]
    if fs is None:
        path = Path(location) / "fleetwatch-state.zip"
        return path.read_bytes() if path.exists() else None
    key = location.removeprefix("s3://") + "/fleetwatch-state.zip"
    return fs.cat_file(key) if fs.exists(key) else None


def test_a_run_failing_in_the_exporter_changes_nothing_and_the_next_run_catches_up(
    fleet, slack_receiver
) -> None:
    telemetry, env, fs = fleet
    telemetry.write(540)
    run(env)
    before = committed(env, fs)
    fault = telemetry.write(180, overload=["machine2"])
    gone = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InfluxUnavailable):
        run(env, fail_export_with=gone)
    assert len(messages(slack_receiver, "Anomaly")) == 1
    assert committed(env, fs) == before  # models, episodes, watermark unchanged

    if fs is not None:  # a new worker: nothing but what the store holds
        shutil.rmtree(ObjectState.open(env["FLEETWATCH_STATE_DIR"]).mirror)
    more = telemetry.write(60, overload=["machine2"])
    summary = run(env)
    assert summary["scores_written"] == len(fault) + len(more)  # nothing lost, nothing twice
    assert len(messages(slack_receiver, "Anomaly")) == 1  # the ledger travelled with the state
    assert FleetState.from_bytes(committed(env, fs)).watermark == more["time"].max()


def test_the_commit_refuses_a_state_another_run_committed_meanwhile(fleet) -> None:
    telemetry, env, fs = fleet
    telemetry.write(300)
    other = FleetState.new().to_bytes()

    def someone_else_commits(name: str, call):
        if name == "export_anomaly_scores":
            if fs is None:
                (Path(env["FLEETWATCH_STATE_DIR"]) / "fleetwatch-state.zip").write_bytes(other)
            else:  # another worker's commit, straight to the store
                key = env["FLEETWATCH_STATE_DIR"].removeprefix("s3://") + "/fleetwatch-state.zip"
                fs.pipe_file(key, other)
        return call()

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        for key, value in env.items():
            patch.setenv(key, value)
        with pytest.raises(PipelineError, match="changed while this run was in progress"):
            run_pipeline(step=someone_else_commits)
    assert committed(env, fs) == other


def test_shards_keep_their_state_under_the_url(fleet) -> None:
    telemetry, env, fs = fleet
    if fs is None:
        pytest.skip("the object-store layout")
    sharded = {**env, "FLEETWATCH_SHARDS": "2"}
    telemetry.write(300)
    for shard in (0, 1):
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
            for key, value in sharded.items():
                patch.setenv(key, value)
            run_pipeline({"shard": shard})
    prefix = env["FLEETWATCH_STATE_DIR"].removeprefix("s3://")
    assert fs.cat_file(f"{prefix}/shards.json")
    machines = [
        FleetState.from_bytes(
            fs.cat_file(f"{prefix}/shards-2/shard-{i}/fleetwatch-state.zip")
        ).detector.machines
        for i in (0, 1)
    ]
    assert len(set(machines[0]) | set(machines[1])) == 3  # every machine, in one shard each
    assert not set(machines[0]) & set(machines[1])
