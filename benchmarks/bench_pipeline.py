"""One pipeline run over the last minute of data, after 1 h and after 24 h of history.

Upstream read the whole `machine_data` table on every run, so a run cost more every minute it
had been running. Here a run reads from its watermark, so its cost should not depend on how much
history the table holds. For 3 and for 100 machines at 1 Hz:

1. two fresh localflux servers get the same 59 minutes of healthy telemetry; one pipeline run
   warms the models (watermark one minute ago) and that state is kept; both get the last minute;
   the second server also gets the 23 hours before (24 h in all); both restart, so their data
   is compacted to Parquet as on a long-running server;
2. one run (the five block files of `influx-magic/`, loaded and called in process as `mage run`
   calls them, `influx_magic.block_files`) from the kept state is timed against each server,
   alternately (which goes first alternates too), RUNS times; medians compared, in total and
   per step (the load step is where history could show; the others work on the same minute of
   rows either way).

Goal: 24 h / 1 h <= 1.2. For reference, upstream's query (`SELECT *` over the table) is timed
on both servers for 3 machines (for 100 machines it would read 8.6M rows).

History is generated with NumPy (smooth cycles plus noise in the simulator's healthy ranges, so
no alerts or plots) as line protocol built by Arrow, and written through the influxdb3-python
client in bodies below 8 MiB.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from influxdb_client_3 import InfluxDBClient3, WriteOptions, WritePrecision, WriteType

from influx_magic.block_files import run_pipeline
from influx_magic.state_file import FILENAME

RUNS = 8
BODY_BYTES = 8 * 1024 * 1024
HOUR = 3600
DAY = 24 * HOUR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Localflux:
    """A localflux serve process on a temporary data dir (restartable: stop compacts)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "localflux", "--log-level", "WARNING", "serve"]
        command += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        self.process = subprocess.Popen(command, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.url}/health", timeout=2).close()
                return
            time.sleep(0.1)
        raise RuntimeError("localflux did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=120)
            self.process = None


def healthy_readings(
    seconds: np.ndarray, phase: np.ndarray, cycle: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every machine (one `phase` and load `cycle` each) at every second of `seconds`, time
    major: each reading's machine index, and each sensor's values (smooth load cycles plus
    noise in the simulator's ranges: nothing to alert on)."""
    machines = len(phase)
    machine = np.tile(np.arange(machines), len(seconds))
    t = np.repeat(seconds, machines).astype(np.float64)
    noise = rng.normal(0, 1, (4, len(t)))
    load = 75 + 17 * np.sin(2 * np.pi * t / cycle[machine] + phase[machine]) + 2 * noise[0]
    return machine, {
        "temperature": 28 + 0.12 * load + 0.3 * noise[1],
        "load": load,
        "power": 140 + 0.9 * load + 1.5 * noise[2],
        "vibration": 55 + 0.35 * load + noise[3],
    }


class History:
    """Telemetry for `machines` machines at 1 Hz, as line protocol in Arrow string arrays.

    Provider names carry no spaces or commas here: escaped tag values take localflux's slower
    parser, which would make writing 8M rows of history take minutes.
    """

    def __init__(self, machines: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.machines = machines
        self.rng = rng
        self.phase = rng.uniform(0, 2 * np.pi, machines)
        self.cycle = rng.uniform(90, 150, machines)
        self.prefix = pa.array(
            [
                f"machine_data,machineID=machine{i},provider=BenchWorks{i % 4} "
                for i in range(1, machines + 1)
            ]
        )

    def lines(self, start: int, end: int, chunk_seconds: int = 3600) -> list[pa.StringArray]:
        """Readings for every machine at every second in [start, end), an array per chunk."""
        return [
            self._span(chunk_start, min(end, chunk_start + chunk_seconds))
            for chunk_start in range(start, end, chunk_seconds)
        ]

    def _span(self, start: int, end: int) -> pa.StringArray:
        seconds = np.arange(start, end)
        machine, columns = healthy_readings(seconds, self.phase, self.cycle, self.rng)
        parts: list[pa.Array | str] = [self.prefix.take(pa.array(machine))]
        for k, (name, values) in enumerate(columns.items()):
            parts += [("," if k else "") + f"{name}=", _text(np.round(values, 2))]
        stamps = pa.array(np.repeat(seconds, self.machines).astype(np.int64) * 1_000_000_000)
        parts += [" ", pc.cast(stamps, pa.string()), "\n"]
        return pc.binary_join_element_wise(*parts, "")


def send(client: InfluxDBClient3, chunks: list[pa.StringArray]) -> int:
    """Write line protocol in bodies below BODY_BYTES, sliced straight out of the Arrow string
    buffers (each line ends with a newline); the number of lines."""
    for lines in chunks:
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[: len(lines) + 1]
        data = lines.buffers()[2]
        first = 0
        while first < len(lines):
            last = int(np.searchsorted(offsets, offsets[first] + BODY_BYTES, side="right")) - 1
            last = max(last, first + 1)
            body = data.slice(offsets[first], offsets[last] - offsets[first]).to_pybytes()
            client.write(record=body, write_precision=WritePrecision.NS)
            first = last
    return sum(len(lines) for lines in chunks)


def _text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


STEPS = {
    "load_influx_data": "load",
    "transform_data": "transform",
    "detect_anomalies": "detect",
    "check_anomalies": "check",
    "export_anomaly_scores": "export",
}


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """The blocks read their settings from the environment, as under Mage."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def one_run(env: dict[str, str], saved: Path) -> dict[str, float]:
    """The five blocks from the saved state (models warm, watermark a minute ago): seconds each."""
    state_dir = Path(env["FLEETWATCH_STATE_DIR"])
    state_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(saved, state_dir / FILENAME)
    seconds: dict[str, float] = {}

    def step(name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        seconds[STEPS[name]] = time.perf_counter() - started
        return result

    with environment(env), contextlib.redirect_stdout(io.StringIO()):
        summary = run_pipeline({"lookback_minutes": 60}, step=step)
    assert summary["scores_written"] == 60 * int(env["BENCH_MACHINES"]), summary
    seconds["run"] = sum(seconds.values())
    return seconds


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def client_for(server: Localflux) -> InfluxDBClient3:
    return InfluxDBClient3(
        host=server.url,
        database="machines",
        token="",
        write_client_options={"write_options": WriteOptions(write_type=WriteType.synchronous)},
    )


def run_environment(server: Localflux, folder: Path, machines: int) -> dict[str, str]:
    return {
        "INFLUX_HOST": server.url,
        "INFLUX_DATABASE": "machines",
        "INFLUX_TOKEN": "",
        "FLEETWATCH_STATE_DIR": str(folder / "state"),
        "FLEETWATCH_OUTPUT_DIR": str(folder / "plots"),
        "SLACK_WEBHOOK_URL": "",
        "BENCH_MACHINES": str(machines),
    }


def scenario(machines: int, folder: Path) -> dict[str, float]:
    """Two localflux servers with the same last hour, one with 23 hours more before it; runs
    alternate between them, so a change in the machine's background load hits both alike."""
    servers = {label: Localflux(folder / label / "influx") for label in ("1h", "24h")}
    for server in servers.values():
        server.start()
    clients = {label: client_for(server) for label, server in servers.items()}
    envs = {label: run_environment(servers[label], folder / label, machines) for label in servers}
    history = History(machines)
    now = int(time.time())
    results: dict[str, float] = {}
    try:
        hour = history.lines(now - HOUR, now - 60)
        for client in clients.values():
            send(client, hour)
        saved = folder / "saved-state"
        with environment(envs["1h"]), contextlib.redirect_stdout(io.StringIO()):
            run_pipeline({"lookback_minutes": 60})
        shutil.copyfile(Path(envs["1h"]["FLEETWATCH_STATE_DIR"]) / FILENAME, saved)
        last_minute = history.lines(now - 60, now)
        for client in clients.values():
            send(client, last_minute)
        started = time.perf_counter()
        rows = send(clients["24h"], history.lines(now - DAY, now - HOUR))
        print(f"  wrote {rows:,} rows of older history in {time.perf_counter() - started:.0f} s")
        for label, server in servers.items():
            clients[label].close()
            server.stop()  # compact to Parquet, as a long-running server would have
            server.start()
            clients[label] = client_for(server)

        timings: dict[str, list[dict[str, float]]] = {label: [] for label in servers}
        for round_ in range(RUNS):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for label in order:  # alternate which goes first: neither gets the warmer caches
                timings[label].append(one_run(envs[label], saved))
        for label, runs in timings.items():
            for name in runs[0]:
                key = label if name == "run" else f"{name} {label}"
                results[key] = statistics.median(run[name] for run in runs)
        if machines <= 3:
            upstream = "SELECT * FROM machine_data"
            for label, client in clients.items():
                results[f"upstream {label}"] = statistics.median(
                    timed(lambda c=client: c.query(upstream, language="sql")) for _ in range(3)
                )
    finally:
        for label, server in servers.items():
            clients[label].close()
            server.stop()
    return results


def main() -> None:
    for machines in (3, 100):
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            print(f"{machines} machines:", flush=True)
            results = scenario(machines, Path(tmp))
        ratio = results["24h"] / results["1h"]
        verdict = "ok" if ratio <= 1.2 else "ABOVE GOAL"
        print(
            f"  one run over the last minute: {results['1h']:.3f} s after 1 h, "
            f"{results['24h']:.3f} s after 24 h; ratio 24h/1h = {ratio:.2f} "
            f"(goal <= 1.2: {verdict})"
        )
        steps = ", ".join(
            f"{name} {results[f'{name} 1h'] * 1000:.0f}/{results[f'{name} 24h'] * 1000:.0f}"
            for name in ("load", "transform", "detect", "check", "export")
        )
        print(f"  per step, ms after 1 h/24 h: {steps}")
        if "upstream 1h" in results:
            upstream = results["upstream 24h"] / results["upstream 1h"]
            print(
                f"  upstream's full-table query: {results['upstream 1h']:.3f} s after 1 h, "
                f"{results['upstream 24h']:.3f} s after 24 h; ratio {upstream:.1f}"
            )


if __name__ == "__main__":
    main()
