"""Helpers for the Mage project's tests: seeded telemetry, the blocks by path, `mage run`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from influx_magic import block_files
from influx_magic.block_files import PROJECT
from influx_magic.influx import FEATURES, write_frame
from influx_magic.run_transaction import CONTEXT_KEY
from machine_simulator.signals import Fleet, Reading
from tests.support import REPO_ROOT

PIPELINE = "machine_anomaly_detection"
MAGE = str(Path(sys.executable).parent / "mage")


# The simulator's healthy signal depends on absolute time (slow cycles and swells), so the same
# test would see different data every minute. Readings are computed at SIM_EPOCH + k seconds and
# stamped start + k: every run of a test sees the same values. With this epoch the detector keeps
# the healthy machines quiet through the fault scenario (at some epochs a healthy machine's first
# reference window is unrepresentative and it raises an alert after ~4 minutes).
SIM_EPOCH = 1_700_001_994


class Telemetry:
    """The simulator's fleet, stepped through time and written to InfluxDB like Telegraf does.

    Readings are one second apart and continue where the previous `write` stopped, so a test
    can add "new data" between pipeline runs.
    """

    def __init__(self, client: Any, start: float, machines: int = 3, seed: int = 42) -> None:
        self.client = client
        self.fleet = Fleet(machines, seed=seed)
        self.start_ms = int(start) * 1000
        self.offset = 0  # seconds written so far
        self.written = 0

    def write(
        self, seconds: int, *, overload: Iterable[str] = (), kind: str = "overload"
    ) -> pd.DataFrame:
        """`seconds` readings per machine; machines in `overload` have the fault `kind` on
        (switched on at the first reading), the others have it off."""
        return self._write(seconds, overload=overload, kind=kind)

    def _write(
        self,
        seconds: int,
        *,
        overload: Iterable[str],
        kind: str,
        values: Callable[[Reading, int], dict[str, Any]] = lambda reading, _second: (
            reading.values()
        ),
    ) -> pd.DataFrame:
        """`write`'s steps; `values(reading, second)` gives a reading's fields, `second`
        counting from this write's first reading (a subclass alters readings there)."""
        faulty = set(overload)
        for machine in self.fleet.machine_ids:
            self.fleet.set_fault(machine, kind, machine in faulty, at=SIM_EPOCH + self.offset)
        rows = []
        for k in range(self.offset, self.offset + seconds):
            stamp = pd.Timestamp(self.start_ms + 1000 * k, unit="ms", tz="UTC")
            for reading in self.fleet.step(SIM_EPOCH + k):
                rows.append(
                    {
                        "time": stamp,
                        "machineID": reading.machine_id,
                        "provider": reading.provider,
                        **values(reading, k - self.offset),
                    }
                )
        self.offset += seconds
        frame = pd.DataFrame(rows)
        self.written += write_frame(
            self.client,
            frame,
            table="machine_data",
            tags=["machineID", "provider"],
            fields=FEATURES,
        )
        return frame

    def restart(self, gap_seconds: int) -> None:
        """The simulator stops and starts again after `gap_seconds`: a new fleet with the same
        seed (as a restarted process would build), continuing after a gap in the data."""
        self.fleet = Fleet(len(self.fleet.machine_ids), seed=self.fleet.seed)
        self.offset += gap_seconds

    def provider(self, machine: str) -> str:
        return self.fleet.machine(machine).provider


def count_rows(client: Any, table: str, where: str = "") -> int:
    """Rows in `table` (0 when it does not exist yet)."""
    try:
        result = client.query(f'SELECT count(*) AS n FROM "{table}" {where}', language="sql")
    except Exception as error:  # the table does not exist before the first write
        if "not found" in str(error).lower() or "not exist" in str(error).lower():
            return 0
        raise
    return int(result.column("n")[0].as_py())


def load_block(name: str) -> ModuleType:
    """Block `name`'s file loaded by path, as Mage loads it: `load_block(n).<n>(...)` calls it."""
    return block_files.load_module(name)


def point_run_at_influx(context: dict, host: str) -> None:
    """Make the run in Mage's `context` talk to InfluxDB at `host` from its next block on (the
    run keeps the settings its loader read from the environment)."""
    run = context[CONTEXT_KEY]
    run.settings = replace(run.settings, influx=replace(run.settings.influx, host=host))


def through_parquet(frame: pd.DataFrame, tmp: Path) -> pd.DataFrame:
    """What Mage hands the next block: the frame after a Parquet round trip."""
    path = tmp / "handoff.parquet"
    frame.to_parquet(path)
    return pd.read_parquet(path)


def run_blocks(tmp: Path, **variables: Any) -> dict[str, Any]:
    """The five blocks in order, in this process, outputs passed on as Mage passes them."""
    return block_files.run_pipeline(variables, handoff=lambda frame: through_parquet(frame, tmp))


def mage_run(
    cwd: Path,
    runtime_vars: Mapping[str, Any] | None = None,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`mage run influx-magic machine_anomaly_detection` with the test's environment (and
    `env` on top of it)."""
    command = [MAGE, "run", str(PROJECT), PIPELINE]
    if runtime_vars:
        command += ["--runtime-vars", json.dumps(dict(runtime_vars))]
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def messages(receiver: Any, word: str, machine: str | None = None) -> list[dict]:
    """Slack bodies whose text starts with `word` (and names `machine`, when given)."""
    found = []
    for body in receiver.payloads():
        text = str(body.get("text", ""))
        if text.startswith(word) and (machine is None or f"{machine} (" in text):
            found.append(body)
    return found


def project_files() -> dict[str, str | None]:
    """Every file of the Mage project that git would report (tracked, or untracked and not
    ignored), with its content hash: equal before and after means `git status` unchanged."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", str(PROJECT)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {name: file_digest(REPO_ROOT / name) for name in listed}
