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

`BENCH_SCALE_MACHINES=1000` (comma-separated) runs only the sizes given.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from benchmarks.bench_pipeline import Localflux, client_for, one_run
from fleetwatch.state import FleetState
from influx_magic import pipeline, state_file
from influx_magic.influx import SCORES_TABLE, TAGS, write_lines
from influx_magic.line_protocol import encode_frame, encode_table

RUNS = 3
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
        machine = np.tile(np.arange(self.machines), len(seconds))
        t = np.repeat(seconds, self.machines).astype(np.float64)
        noise = self.rng.normal(0, 1, (4, len(t)))
        load = 75 + 17 * np.sin(2 * np.pi * t / self.cycle[machine] + self.phase[machine])
        load += 2 * noise[0]
        values = {
            "temperature": 28 + 0.12 * load + 0.3 * noise[1],
            "load": load,
            "power": 140 + 0.9 * load + 1.5 * noise[2],
            "vibration": 55 + 0.35 * load + noise[3],
        }
        index = pa.array(machine)
        return pa.table(
            {
                "time": pa.array(np.repeat(seconds, self.machines) * 10**9, pa.timestamp("ns")),
                "machineID": self.ids.take(index),
                "provider": self.providers.take(index),
                **{name: pa.array(np.round(v, 2)) for name, v in values.items()},
            }
        )


def warm_state(
    telemetry: Telemetry, ctx: pipeline.RunContext, start: int, end: int, path: Path
) -> FleetState:
    """Models that have seen [start, end), saved at `path` as the committed state."""
    state = FleetState.new(ctx.config)
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


def scenario(machines: int, folder: Path) -> dict[str, float]:
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
    ctx = pipeline.RunContext.from_kwargs({"lookback_minutes": 60}, env=env)
    telemetry = Telemetry(machines)
    now = int(time.time())
    results: dict[str, float] = {}
    try:
        saved = folder / "saved-state"
        started = time.perf_counter()
        state = warm_state(telemetry, ctx, now - 60 - WARM_SECONDS, now - 60, saved)
        results["warm-up s"] = time.perf_counter() - started
        results["MB in memory / 1k machines"], results["MB committed / 1k machines"] = state_sizes(
            state
        )
        fresh = telemetry.table(now - FRESH_SECONDS, now)
        encoded = encode_table(
            fresh, "machine_data", tags=["machineID", "provider"], fields=list(FEATURES)
        )
        write_lines(client, encoded.lines, table="machine_data")
        read_since = pd.Timestamp(state.watermark) - pipeline.LATENESS

        runs, floors = [], []
        ready = None
        for round_ in range(RUNS):
            work = ["run", "floor"] if round_ % 2 == 0 else ["floor", "run"]
            for what in work:
                if what == "run":
                    captured: dict[str, pd.DataFrame] = {}
                    runs.append(one_run(ctx, saved, keep=captured))
                    if ready is None:
                        rows = captured["checked"]
                        rows = rows[rows["status"] == "scored"]
                        ready = encode_frame(
                            rows,
                            SCORES_TABLE,
                            tags=TAGS,
                            fields=["score", "is_anomaly", "episode_id"],
                        ).lines
                elif ready is not None:
                    floors.append(floor(client, ready, read_since, ctx.features))
        if len(floors) < RUNS:  # the first round measured the floor before a run made its rows
            floors.append(floor(client, ready, read_since, ctx.features))
        for name in runs[0]:
            results[name] = statistics.median(r[name] for r in runs)
        for name in floors[0]:
            results[name] = statistics.median(f[name] for f in floors)
        results["floor"] = results["floor write"] + results["floor read"]
        results["rows"] = len(ready)
    finally:
        client.close()
        server.stop()
    return results


def main() -> None:
    chosen = os.environ.get("BENCH_SCALE_MACHINES")
    sizes = [int(n) for n in chosen.split(",")] if chosen else SIZES
    for machines in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            print(f"{machines:,} machines, one minute at 1 Hz:", flush=True)
            with contextlib.redirect_stdout(io.StringIO()):
                results = scenario(machines, Path(tmp))
        report(machines, results)


def report(machines: int, r: dict[str, float]) -> None:
    steps = ", ".join(
        f"{name} {r[name]:.2f}" for name in ("load", "transform", "detect", "check", "export")
    )
    ratio = r["run"] / r["floor"]
    rate = r["floor write"] / r["export"]
    print(f"  run {r['run']:.2f} s ({steps})")
    print(
        f"  I/O floor {r['floor']:.2f} s (write {r['rows']:,} rows of ready line protocol "
        f"{r['floor write']:.2f} s, read back {r['floor read']:.2f} s); run / floor = "
        f"{ratio:.1f}x (goal <= 4: {'ok' if ratio <= 4 else 'ABOVE GOAL'})"
    )
    print(
        f"  export rate / ready line protocol rate = {rate:.2f} "
        f"(goal >= 0.7: {'ok' if rate >= 0.7 else 'BELOW GOAL'})"
    )
    print(
        f"  state per 1,000 machines: {r['MB in memory / 1k machines']:.2f} MB in memory, "
        f"{r['MB committed / 1k machines']:.2f} MB committed; warm-up {r['warm-up s']:.0f} s"
    )


if __name__ == "__main__":
    main()
