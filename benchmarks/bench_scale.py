"""Fleet scale: one pipeline run over the last minute for 1,000 and 10,000 machines at 1 Hz,
each step timed, against the I/O floor measured in the same run.

For each fleet size, on a fresh `localflux serve`:

1. warm models: 270 s of healthy telemetry go through the detector in process (no InfluxDB:
   writing and re-reading them would only slow the benchmark down), the state is saved with
   its watermark 61 s before "now";
2. the last 90 s of telemetry (the 30 s lateness re-read and the minute to score) are written
   to localflux as line protocol;
3. RUNS times, alternately: one pipeline run (the five steps of `fleetwatch.pipeline` in
   process, as `mage run` calls them, from the saved state), and the I/O floor: the run's own
   `anomaly_scores` rows written as ready line protocol (built beforehand, untimed) until the
   server acknowledged the last body, plus the rows the loader reads, fetched with one query.
   Medians are compared.

Printed per fleet size: the steps, run / floor (goal <= 4), the export's rate against the ready
line protocol's rate (export timed until the last write was acknowledged; goal >= 0.7), and the
detector state's size per 1,000 machines (in memory and as committed bytes).

Then, for the largest size, Mage itself runs the pipeline (`influx_magic.mage_server` on a copy of
the project without its every-minute trigger): one API-triggered run over the whole fleet
(FLEETWATCH_SHARDS=1), and one run per shard with FLEETWATCH_SHARDS=2 (state re-partitioned from
the same warm state, `shard` as the runtime variable), MAGE_RUNS times each from the same state.
From Mage's own run records: whether the shards' runs overlapped; the wall time runs from the
first run's start (run record) to the last shard's commit (its state file: Mage records a
completion only at its next scheduler tick, up to ~10 s later); goal: one / two shards >= 1.3.
Mage's runs judge the shipped `checks.yaml` with its no-data checks given an hour instead of
minutes: the telemetry was written once, before the in-process runs, and by the time Mage's
rounds run it is minutes old in wall-clock time, so `silent` would find the whole fleet gone
quiet (a fleet-wide incident, not the ordinary minute measured here).

`BENCH_SCALE_MACHINES=1000` (comma-separated) runs only the sizes given; `BENCH_SCALE_MAGE=0`
leaves Mage's part out.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from benchmarks.bench_pipeline import (
    STEPS,
    Localflux,
    client_for,
    environment,
    free_port,
    healthy_readings,
)
from fleetwatch.state import FleetState
from influx_magic import state_file
from influx_magic.block_files import run_pipeline
from influx_magic.influx import SCORE_FIELDS, SCORES_TABLE, TAGS, write_lines
from influx_magic.line_protocol import encode_frame, encode_table
from influx_magic.mage_server import (
    PIPELINE,
    PROJECT,
    MageApi,
    MageServerError,
    ensure_api_trigger,
    mage_command,
    mage_environment,
)
from influx_magic.run_transaction import LATENESS
from influx_magic.shards import Shard, repartition

RUNS = 3
MAGE_RUNS = 2
API_TOKEN = "benchscale0token"
SIZES = (1_000, 10_000)
WARM_SECONDS = 270
FRESH_SECONDS = 90
FEATURES = ("temperature", "load", "power", "vibration")


class Telemetry:
    """Healthy readings for `machines` machines at 1 Hz: smooth load cycles plus noise in the
    simulator's ranges (no alerts, so no plots), as Arrow tables."""

    def __init__(self, machines: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.machines = machines
        self.rng = rng
        self.phase = rng.uniform(0, 2 * np.pi, machines)
        self.cycle = rng.uniform(90, 150, machines)
        self.ids = pa.array([f"machine{i}" for i in range(1, machines + 1)])
        self.providers = pa.array([f"BenchWorks{i % 4}" for i in range(1, machines + 1)])

    def table(self, start: int, end: int) -> pa.Table:
        """Every machine at every second in [start, end) (epoch seconds), in time order."""
        seconds = np.arange(start, end)
        machine, values = healthy_readings(seconds, self.phase, self.cycle, self.rng)
        index = pa.array(machine)
        return pa.table(
            {
                "time": pa.array(np.repeat(seconds, self.machines) * 10**9, pa.timestamp("ns")),
                "machineID": self.ids.take(index),
                "provider": self.providers.take(index),
                **{name: pa.array(np.round(v, 2)) for name, v in values.items()},
            }
        )


def warm_state(telemetry: Telemetry, start: int, end: int, path: Path) -> FleetState:
    """Default models that have seen [start, end), saved at `path` as the committed state."""
    state = FleetState.new()
    for minute in range(start, end, 60):
        frame = telemetry.table(minute, min(end, minute + 60)).to_pandas()
        frame["time"] = frame["time"].dt.tz_localize("UTC")
        frame["unique_id"] = frame["provider"].str.lower() + "-" + frame["machineID"]
        state.process(frame)
    ids = pd.Series(telemetry.ids.to_pylist())
    providers = pd.Series(telemetry.providers.to_pylist())
    keys = providers.str.lower() + "-" + ids
    state.extra["machines"] = {k: [m, p] for k, m, p in zip(keys, ids, providers, strict=True)}
    state_file.save(state, path)
    return state


def timed_run(env: dict[str, str], saved: Path, keep: dict[str, Any]) -> dict[str, float]:
    """The five block files from the saved state (models warm, watermark a minute ago):
    seconds each; `keep["checked"]` gets check_anomalies' output."""
    state_dir = Path(env["FLEETWATCH_STATE_DIR"])
    state_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(saved, state_dir / state_file.FILENAME)
    seconds: dict[str, float] = {}

    def step(name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        seconds[STEPS[name]] = time.perf_counter() - started
        if name == "check_anomalies":
            keep["checked"] = result
        return result

    with environment(env), contextlib.redirect_stdout(io.StringIO()):
        summary = run_pipeline({"lookback_minutes": 60}, step=step)
    assert summary["scores_written"] == 60 * int(env["BENCH_MACHINES"]), summary
    keep["config_id"] = summary["config_id"]
    seconds["run"] = sum(seconds.values())
    return seconds


def ready_scores(captured: dict[str, Any]) -> pa.ChunkedArray:
    """The run's `anomaly_scores` rows as line protocol, every field the export writes (score,
    is_anomaly, episode_id, unique_id, config_id, warm, dev_<feature>): the floor writes the
    same content the run does."""
    rows = captured["checked"]
    rows = rows[rows["status"] == "scored"].assign(config_id=captured["config_id"])
    fields = [c for c in SCORE_FIELDS if c in rows.columns]
    fields += [c for c in rows.columns if c.startswith("dev_")]
    return encode_frame(rows, SCORES_TABLE, tags=TAGS, fields=fields).lines


def state_sizes(state: FleetState) -> tuple[float, float]:
    """MB per 1,000 machines: the detector's arrays in memory, and the committed file."""
    machines = len(state.detector.machines) / 1000
    in_memory = sum(a.nbytes for a in state.detector.arrays().values()) / 1e6
    return in_memory / machines, len(state.to_bytes()) / 1e6 / machines


def floor(client, lines: pa.ChunkedArray, read_since: pd.Timestamp, features) -> dict[str, float]:
    """Ready line protocol written until acknowledged; the loader's rows read with one query."""
    started = time.perf_counter()
    write_lines(client, lines, table="floor_scores")
    written = time.perf_counter()
    columns = ", ".join(['"machineID"', '"provider"', *(f'"{f}"' for f in features)])
    table = client.query(
        f"SELECT time, {columns} FROM machine_data WHERE time >= $since",
        mode="all",
        query_parameters={"since": read_since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    )
    read = time.perf_counter()
    assert table.num_rows > 0
    return {"floor write": written - started, "floor read": read - written}


def scenario(
    machines: int,
    folder: Path,
    mage: bool = False,
    measured: Callable[[dict[str, float]], None] = lambda results: None,
) -> dict[str, float]:
    """The in-process runs against their floor (`measured` is called with them before Mage
    starts, so a failing Mage part keeps them), then Mage's shard runs when `mage`."""
    server = Localflux(folder / "influx")
    server.start()
    client = client_for(server)
    env = {
        "INFLUX_HOST": server.url,
        "INFLUX_DATABASE": "machines",
        "FLEETWATCH_STATE_DIR": str(folder / "state"),
        "FLEETWATCH_OUTPUT_DIR": str(folder / "plots"),
        "SLACK_WEBHOOK_URL": "",
        "BENCH_MACHINES": str(machines),
    }
    telemetry = Telemetry(machines)
    now = int(time.time())
    results: dict[str, float] = {}
    try:
        saved = folder / "saved-state"
        started = time.perf_counter()
        state = warm_state(telemetry, now - 60 - WARM_SECONDS, now - 60, saved)
        results["warm-up s"] = time.perf_counter() - started
        results["MB in memory / 1k machines"], results["MB committed / 1k machines"] = state_sizes(
            state
        )
        fresh = telemetry.table(now - FRESH_SECONDS, now)
        encoded = encode_table(
            fresh, "machine_data", tags=["machineID", "provider"], fields=list(FEATURES)
        )
        write_lines(client, encoded.lines, table="machine_data")
        read_since = pd.Timestamp(state.watermark) - LATENESS

        runs, floors = [], []
        ready = None
        for round_ in range(RUNS):
            work = ["run", "floor"] if round_ % 2 == 0 else ["floor", "run"]
            for what in work:
                if what == "run":
                    captured: dict[str, pd.DataFrame] = {}
                    runs.append(timed_run(env, saved, keep=captured))
                    if ready is None:
                        ready = ready_scores(captured)
                elif ready is not None:
                    floors.append(floor(client, ready, read_since, FEATURES))
        if len(floors) < RUNS:  # the first round measured the floor before a run made its rows
            floors.append(floor(client, ready, read_since, FEATURES))
        for name in runs[0]:
            results[name] = statistics.median(r[name] for r in runs)
        for name in floors[0]:
            results[name] = statistics.median(f[name] for f in floors)
        results["floor"] = results["floor write"] + results["floor read"]
        results["rows"] = len(ready)
        measured(results)
        if mage:
            results.update(mage_shards(folder, env, saved))
    finally:
        client.close()
        server.stop()
    return results


def main() -> None:
    chosen = os.environ.get("BENCH_SCALE_MACHINES")
    sizes = [int(n) for n in chosen.split(",")] if chosen else SIZES
    with_mage = os.environ.get("BENCH_SCALE_MAGE", "1") != "0"
    out = sys.stdout
    for machines in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            print(f"{machines:,} machines, one minute at 1 Hz:", flush=True)
            with contextlib.redirect_stdout(io.StringIO()):
                results = scenario(
                    machines,
                    Path(tmp),
                    mage=with_mage and machines == max(sizes),
                    measured=lambda r: report(r, out),
                )
        report_mage(results)


def report(r: dict[str, float], out: TextIO) -> None:
    """The in-process run against its I/O floor, the export's rate, the state's size."""
    steps = ", ".join(
        f"{name} {r[name]:.2f}" for name in ("load", "transform", "detect", "check", "export")
    )
    ratio = r["run"] / r["floor"]
    rate = r["floor write"] / r["export"]
    print(f"  run {r['run']:.2f} s ({steps})", file=out)
    print(
        f"  I/O floor {r['floor']:.2f} s (write {r['rows']:,} rows of ready line protocol "
        f"{r['floor write']:.2f} s, read back {r['floor read']:.2f} s); run / floor = "
        f"{ratio:.1f}x (goal <= 4: {'ok' if ratio <= 4 else 'ABOVE GOAL'})",
        file=out,
    )
    print(
        f"  export rate / ready line protocol rate = {rate:.2f} "
        f"(goal >= 0.7: {'ok' if rate >= 0.7 else 'BELOW GOAL'})",
        file=out,
    )
    print(
        f"  state per 1,000 machines: {r['MB in memory / 1k machines']:.2f} MB in memory, "
        f"{r['MB committed / 1k machines']:.2f} MB committed; warm-up {r['warm-up s']:.0f} s",
        file=out,
        flush=True,
    )


def report_mage(r: dict[str, float]) -> None:
    """Mage's runs of one shard and of two (when the Mage part ran)."""
    if "mage 1 shard" in r:
        speedup = r["mage 1 shard"] / r["mage 2 shards"]
        print(
            f"  Mage runs (first start in the run records to the last commit): 1 shard "
            f"{r['mage 1 shard']:.1f} s, 2 shards {r['mage 2 shards']:.1f} s "
            f"(overlapping: {'yes' if r['mage overlap'] else 'NO'}); 1 / 2 = {speedup:.2f} "
            f"(goal >= 1.3: {'ok' if speedup >= 1.3 else 'BELOW GOAL'})"
        )


def mage_shards(folder: Path, env: dict[str, str], saved: Path) -> dict[str, float]:
    """Mage's scheduler runs the pipeline: one run over the fleet, then one run per shard of
    two; wall times and overlap from Mage's run records (median of MAGE_RUNS)."""
    project = folder / "project"
    shutil.copytree(
        PROJECT, project, ignore=shutil.ignore_patterns("__pycache__", ".file_versions")
    )
    (project / "pipelines" / PIPELINE / "triggers.yaml").unlink()  # no every-minute runs here
    layouts = {}
    for count in (1, 2):
        root = folder / f"mage-state-{count}"
        Shard(0, count).folder(root).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(saved, root / state_file.FILENAME)
        repartition(root, count)
        layouts[count] = root
    env = {**env, "CHECKS_FILE": str(patient_checks(folder / "checks.yaml"))}
    results: dict[str, float] = {}
    for count, root in layouts.items():
        pristine = folder / f"pristine-{count}"
        shutil.copytree(root, pristine)
        walls, overlaps = [], []
        with running_mage(folder / f"mage-{count}", project, env, root, count) as (api, trigger):
            for _ in range(MAGE_RUNS):
                shutil.rmtree(root)
                shutil.copytree(pristine, root)
                runs = [
                    api.call(
                        "POST",
                        f"/api/pipeline_schedules/{trigger}/pipeline_runs/{API_TOKEN}",
                        {"pipeline_run": {"variables": {"shard": index} if count > 1 else {}}},
                    )["pipeline_run"]["id"]
                    for index in range(count)
                ]
                records = wait_for_runs(api, runs)
                starts = [pd.Timestamp(r["started_at"], tz="UTC") for r in records]
                ends = [pd.Timestamp(r["completed_at"], tz="UTC") for r in records]
                overlaps.append(count == 1 or max(starts) < min(ends))
                # Mage records a completion at its next scheduler tick (up to ~10 s late): the
                # work ends when the shard's exporter committed its state.
                commits = [
                    pd.Timestamp(
                        (Shard(i, count).folder(root) / state_file.FILENAME).stat().st_mtime,
                        unit="s",
                        tz="UTC",
                    )
                    for i in range(count)
                ]
                walls.append((max(commits) - min(starts)).total_seconds())
        label = "mage 1 shard" if count == 1 else "mage 2 shards"
        results[label] = statistics.median(walls)
        if count > 1:
            results["mage overlap"] = float(all(overlaps))
    return results


def patient_checks(path: Path) -> Path:
    """The shipped checks file with every no-data check's silence set to an hour (see the
    module doc: the benchmark's telemetry ages in wall-clock time while Mage's rounds run)."""
    declared = yaml.safe_load((PROJECT / "checks.yaml").read_text())
    for check in declared["checks"]:
        if check["kind"] == "no_data":
            check["for"] = "1h"
    path.write_text(yaml.safe_dump(declared, sort_keys=False))
    return path


@contextlib.contextmanager
def running_mage(folder: Path, project: Path, env: dict[str, str], root: Path, count: int):
    """`mage start` (through influx_magic.mage_patches) on `project` with FLEETWATCH_SHARDS=count;
    yields a REST client and the API trigger's id; stops the whole process group after."""
    port = free_port()
    home, data = folder / "home", folder / "data"
    home.mkdir(parents=True)
    data.mkdir()
    mage_env = mage_environment(
        {
            **os.environ,
            **env,
            "MAGE_DATA_DIR": str(data),
            "FLEETWATCH_STATE_DIR": str(root),
            "FLEETWATCH_SHARDS": str(count),
        },
        host="127.0.0.1",
        port=port,
        home=home,
    )
    with (folder / "mage.log").open("wb") as log:
        process = subprocess.Popen(
            mage_command(project, "127.0.0.1", port),
            env=mage_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        api = MageApi(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 300
        while True:
            try:
                api.call("GET", f"/api/pipelines/{PIPELINE}/pipeline_schedules")
                break
            except MageServerError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(1)
        yield api, ensure_api_trigger(api, API_TOKEN)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_for_runs(api: MageApi, ids: list[int], timeout: float = 900) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [api.call("GET", f"/api/pipeline_runs/{i}")["pipeline_run"] for i in ids]
        if all(r["status"] in ("completed", "failed", "cancelled") for r in records):
            failed = [r["id"] for r in records if r["status"] != "completed"]
            if failed:
                raise RuntimeError(f"Mage runs {failed} did not complete (see the mage.log)")
            return records
        time.sleep(0.5)
    raise RuntimeError(f"Mage runs {ids} did not finish within {timeout:g} s")


if __name__ == "__main__":
    main()
