"""The run lock between real processes: the second run waits, then names the holder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from influx_magic.runlock import RunLock, RunLockBusy
from tests.support import REPO_ROOT

HOLDER = """
import sys, time
from influx_magic.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire(timeout=0, what="scheduled run 42")
print("locked", flush=True)
sys.stdin.readline()  # hold until the test closes our stdin
time.sleep(0.5)  # ...and a little longer, so the other side really waits
"""


@pytest.fixture
def other_run(tmp_path: Path):
    """Another process holding the lock until its stdin is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=10)


def test_second_run_gives_up_naming_the_holder(other_run, tmp_path: Path) -> None:
    with pytest.raises(RunLockBusy) as raised:
        RunLock(tmp_path).acquire(timeout=0.5)
    message = str(raised.value)
    assert f"pid {other_run.pid}" in message
    assert "scheduled run 42" in message and str(tmp_path / "run.lock") in message
    assert raised.value.holder["pid"] == other_run.pid


def test_second_run_waits_and_gets_the_lock_when_the_first_ends(other_run, tmp_path) -> None:
    other_run.stdin.close()  # the first run finishes (its process exits: the kernel releases)
    with RunLock(tmp_path).hold(timeout=30, what="manual run") as lock:
        assert lock.holder()["what"] == "manual run"


def test_a_killed_holder_leaves_no_stale_lock(other_run, tmp_path: Path) -> None:
    other_run.kill()
    other_run.wait()
    with RunLock(tmp_path).hold(timeout=10):
        pass
