"""localflux serve: ingest, Flight reads and time pruning, as ratios to references in the same run.

1. Writes: 1M rows of machine telemetry (100 machines, 2 tags, 5 fields) in 50k-row chunks.
   References: the client's DataFrame -> line protocol conversion (DataframeSerializer), and
   the client's whole write path against a null server that accepts every body unread
   (serialisation + the client's own encoding and HTTP). Measured: the same writes through
   localflux. Goal: end-to-end >= 50% of the client's serialisation rate.
2. Reads: `SELECT *` over those 1M rows via Flight, against pyarrow reading the same rows from
   one local Parquet file. Goal: <= 3x.
3. Pruning: a last-minute query after 1 h and after 24 h of history (100 series at 1 Hz,
   360k and 8.64M rows). Goal: 24 h / 1 h <= 1.2. The history is written through the storage
   layer (Store.write with Arrow columns: the same validation, WAL and compaction as an HTTP
   write, minus text parsing), because 8.64M rows over HTTP would take minutes.
4. Escaped tag values: parsing a 50k-line body whose provider tags are the simulator's real
   company names (spaces and commas, escaped by the client's serialiser) against the same
   body with plain names. Reported as a ratio, no goal: before the columnar path read
   escapes it was about 25x slower.
5. Wide lines: parsing and storing one line of 10,000 tags against one of 1,000, as time per
   tag. Goal: <= 2 (linear; lookups by name scanned every column, 10,000 tags took 126 s).
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from influxdb_client_3 import InfluxDBClient3
from influxdb_client_3.write_client.client.write.dataframe_serializer import DataframeSerializer
from influxdb_client_3.write_client.client.write_api import PointSettings
from influxdb_client_3.write_client.domain.write_precision import WritePrecision

from localflux.influxdb.lineprotocol import LineGroup, Parsed, parse
from localflux.influxdb.model import Kind
from localflux.influxdb.storage import Store
from machine_simulator.identity import PROVIDERS

ROWS = 1_000_000
CHUNK = 50_000
MACHINES = 100
TAGS = ["machineID", "provider"]
WRITE_OPTIONS = {
    "data_frame_measurement_name": "machine_data",
    "data_frame_tag_columns": TAGS,
    "data_frame_timestamp_column": "time",
}
# The last minute of the history (its end is a parameter: writing 24 h takes a while, so
# `now() - interval '1 minute'` would catch less than a minute of it).
LAST_MINUTE = "SELECT * FROM machine_data WHERE time > $since"


def telemetry(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    return pd.DataFrame(
        {
            "time": pd.date_range("2024-01-01", periods=rows, freq="10ms"),
            "machineID": [f"machine{i % MACHINES:03d}" for i in range(rows)],
            "provider": [f"provider{i % 4}" for i in range(rows)],
            "volt": rng.normal(170, 10, rows),
            "rotate": rng.normal(450, 50, rows),
            "pressure": rng.normal(100, 10, rows),
            "vibration": rng.normal(40, 5, rows),
            "cycles": rng.integers(0, 10_000, rows),
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_seconds(work: Callable[[], object], runs: int) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


class NullServer:
    """Accepts every write unread: the client's own cost, with no server work at all."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                remaining = int(self.headers.get("Content-Length") or 0)
                while remaining:
                    remaining -= len(self.rfile.read(min(remaining, 1 << 20)))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Server:
    """`python -m localflux serve` in its own process group."""

    def __init__(self, data_dir: Path, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "localflux", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--data-dir", str(data_dir), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("localflux did not start")

    def client(self) -> InfluxDBClient3:
        return InfluxDBClient3(host=self.url, token="", database="machines")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def write_rates(frame: pd.DataFrame, data_dir: Path) -> Server:
    """Serialise, write to a null server and write to localflux chunk by chunk, interleaved,
    so that load from other processes on the machine spreads evenly over the three."""
    chunks = [frame.iloc[i : i + CHUNK] for i in range(0, len(frame), CHUNK)]
    null = NullServer()
    null_client = InfluxDBClient3(host=null.url, token="", database="machines")
    server = Server(data_dir)
    client = server.client()
    spent = {"serialize": 0.0, "null": 0.0, "localflux": 0.0}
    steps = {
        "serialize": lambda chunk: DataframeSerializer(
            chunk, PointSettings(), WritePrecision.NS, **WRITE_OPTIONS
        ).serialize(),
        "null": lambda chunk: null_client.write(chunk, **WRITE_OPTIONS),
        "localflux": lambda chunk: client.write(chunk, **WRITE_OPTIONS),
    }
    for number, chunk in enumerate(chunks):
        names = list(steps)
        for name in names[number % 3 :] + names[: number % 3]:
            started = time.perf_counter()
            steps[name](chunk)
            spent[name] += time.perf_counter() - started
    null.close()
    serialize_rate, client_rate, e2e_rate = (len(frame) / spent[name] for name in steps)
    ratio = e2e_rate / serialize_rate
    print(f"client DataFrame -> line protocol (DataframeSerializer): {serialize_rate:,.0f} rows/s")
    print(f"client write() to a null server (all client-side work): {client_rate:,.0f} rows/s")
    print(f"end-to-end write() through localflux, 1M rows in 50k chunks: {e2e_rate:,.0f} rows/s")
    print(
        f"  e2e / serialization = {ratio:.2f} (goal >= 0.50) {'OK' if ratio >= 0.5 else 'MISSED'}"
    )
    print(
        f"  e2e / client alone = {e2e_rate / client_rate:.2f} "
        "(the share of write time the client spends on its own work)"
    )
    return server


def read_rates(server: Server, data_dir: Path, scratch: Path) -> None:
    """SELECT * via Flight as configured by default (decoded Parquet cached in memory), and
    with the cache off (every query reads the Parquet files), against pyarrow's read.
    Flight queries and local reads alternate, so load from other processes hits both."""
    client = server.client()
    table = client.query("SELECT * FROM machine_data")
    assert table.num_rows == ROWS, table.num_rows
    path = scratch / "reference.parquet"
    pq.write_table(table, path)
    flight, local = [], []
    for _ in range(9):
        flight.append(median_seconds(lambda: client.query("SELECT * FROM machine_data"), runs=1))
        local.append(median_seconds(lambda: pq.read_table(path), runs=1))
    warm, local_median = statistics.median(flight), statistics.median(local)
    server.stop()
    uncached = Server(data_dir, "--cache-mb", "0")
    try:
        client = uncached.client()
        cold = median_seconds(lambda: client.query("SELECT * FROM machine_data"), runs=5)
    finally:
        uncached.stop()
    ratio = warm / local_median
    print(f"Flight SELECT * over 1M rows: {warm * 1000:.0f} ms (median of 9)")
    print(
        f"pyarrow reading the same rows from one local Parquet file: {local_median * 1000:.0f} ms"
    )
    print(f"  Flight / Parquet = {ratio:.2f} (goal <= 3) {'OK' if ratio <= 3 else 'MISSED'}")
    print(
        f"  with --cache-mb 0 (each query reads Parquet): {cold * 1000:.0f} ms, "
        f"{cold / local_median:.2f} x the local read"
    )


def write_history(data_dir: Path, hours: int) -> tuple[int, int]:
    """`hours` of 100 series at 1 Hz ending now, one Store.write per hour, compacted.

    Returns the number of rows and the time (ns) of the last second.
    """
    store = Store(data_dir)
    end = time.time_ns() // 10**9 * 10**9
    machines = np.array([f"machine{i:03d}" for i in range(MACHINES)], dtype=object)
    rng = np.random.default_rng(1)
    per_hour = 3600 * MACHINES
    for hour in range(hours):
        seconds = np.repeat(np.arange(hour * 3600, (hour + 1) * 3600), MACHINES)
        times = end - (hours * 3600 - 1 - seconds) * 10**9
        group = LineGroup(
            "machine_data",
            np.arange(per_hour),
            {"machineID": pa.array(np.tile(machines, 3600), pa.string())},
            {
                "volt": (Kind.FLOAT, pa.array(rng.normal(170, 10, per_hour))),
                "rotate": (Kind.FLOAT, pa.array(rng.normal(450, 50, per_hour))),
                "vibration": (Kind.FLOAT, pa.array(rng.normal(40, 5, per_hour))),
            },
            pa.array(times, pa.int64()),
        )
        parsed = Parsed(pa.array([], pa.string()), [group], [])
        store.write(
            "machines", parsed, precision="ns", now_ns=end, accept_partial=False, no_sync=True
        )
        store.compact()
    store.close()
    return hours * per_hour, end


def pruning(scratch: Path) -> None:
    """Both servers run at once and the queries alternate, so load from other processes
    hits both alike."""
    servers, parameters = {}, {}
    try:
        for hours in (1, 24):
            data_dir = scratch / f"history-{hours}h"
            started = time.perf_counter()
            rows, end = write_history(data_dir, hours)
            elapsed = time.perf_counter() - started
            print(f"{hours:>2} h of history: {rows:,} rows written in {elapsed:.0f} s")
            parameters[hours] = {"since": pd.Timestamp(end - 60 * 10**9).isoformat()}
            servers[hours] = Server(data_dir)
        clients = {hours: server.client() for hours, server in servers.items()}
        timings: dict[int, list[float]] = {1: [], 24: []}
        for _ in range(40):
            for hours, client in clients.items():
                started = time.perf_counter()
                result = client.query(LAST_MINUTE, query_parameters=parameters[hours])
                timings[hours].append(time.perf_counter() - started)
                assert result.num_rows == 60 * MACHINES, result.num_rows
    finally:
        for server in servers.values():
            server.stop()
    medians = {hours: statistics.median(values[5:]) for hours, values in timings.items()}
    ratio = medians[24] / medians[1]
    print(
        f"last-minute query (6,000 rows) via Flight: after 1 h {medians[1] * 1000:.1f} ms, "
        f"after 24 h {medians[24] * 1000:.1f} ms (median of 35, after 5 warm-up queries)"
    )
    print(f"  24 h / 1 h = {ratio:.2f} (goal <= 1.2) {'OK' if ratio <= 1.2 else 'MISSED'}")
    print("  (history written through the storage layer, not over HTTP; see the module docstring)")


def escaped_tag_parsing(frame: pd.DataFrame) -> None:
    """Parse rate of line protocol with escaped provider names against plain ones, serialised
    by the client from the same 50k rows; bodies alternate so load hits both alike."""
    chunk = frame.iloc[:CHUNK]
    # One provider per machine, as in the simulator: the same cardinality either way.
    index = chunk["machineID"].str[-3:].astype(int) % len(PROVIDERS)
    names = {"plain": "provider" + index.astype(str), "escaped": index.map(PROVIDERS.__getitem__)}
    bodies = {
        kind: "\n".join(
            DataframeSerializer(
                chunk.assign(provider=provider), PointSettings(), WritePrecision.NS, **WRITE_OPTIONS
            ).serialize()
        ).encode()
        for kind, provider in names.items()
    }
    assert b"\\ " in bodies["escaped"] and b"\\," in bodies["escaped"]
    timings: dict[str, list[float]] = {kind: [] for kind in bodies}
    for _ in range(7):
        for kind, body in bodies.items():
            timings[kind].append(median_seconds(lambda body=body: parse(body), runs=1))
    rates = {kind: CHUNK / statistics.median(values) for kind, values in timings.items()}
    print(
        f"parse 50k lines, provider tags plain: {rates['plain']:,.0f} rows/s, "
        f"escaped real names: {rates['escaped']:,.0f} rows/s"
    )
    print(f"  plain / escaped = {rates['plain'] / rates['escaped']:.2f} (median of 7)")


def wide_lines(scratch: Path) -> None:
    """Seconds per tag for a line of 1,000 and of 10,000 tags (parse + Store.write)."""
    per_tag = {}
    for count in (1_000, 10_000):
        tags = ",".join(f"t{i}=v{i}" for i in range(count))
        body = f"wide,{tags} f=1 1700000000000000000".encode()
        timings = []
        for run in range(3):
            store = Store(scratch / f"wide-{count}-{run}")
            started = time.perf_counter()
            store.write(
                "machines", parse(body), precision="ns", now_ns=0, accept_partial=False,
                no_sync=True,
            )  # fmt: skip
            timings.append(time.perf_counter() - started)
            store.close()
        per_tag[count] = statistics.median(timings) / count
    ratio = per_tag[10_000] / per_tag[1_000]
    print(
        f"one line of 1,000 tags: {per_tag[1_000] * 1e6:.0f} us/tag, of 10,000 tags: "
        f"{per_tag[10_000] * 1e6:.0f} us/tag (median of 3)"
    )
    print(f"  10,000 / 1,000 per tag = {ratio:.2f} (goal <= 2) {'OK' if ratio <= 2 else 'MISSED'}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-localflux-") as tmp:
        scratch = Path(tmp)
        frame = telemetry(ROWS)
        escaped_tag_parsing(frame)
        wide_lines(scratch)
        server = write_rates(frame, scratch / "writes")
        try:
            read_rates(server, scratch / "writes", scratch)
        finally:
            server.stop()
        pruning(scratch)


if __name__ == "__main__":
    main()
