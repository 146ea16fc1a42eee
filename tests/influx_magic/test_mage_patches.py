"""influx_magic.mage_patches: Mage 0.9.80's ProcessQueue loses a job whose item the feeder thread
has not yet written when the worker pool looks; patched, every job runs.

The race is made deterministic by an argument that takes seconds to pickle: the feeder thread
pickles it, so the item reaches the pipe well after the pool process has started. Each scenario
runs in its own interpreter, so the unpatched class stays unpatched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mage_ai")

from influx_magic import mage_patches  # noqa: E402

SCENARIO = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    patched, out, jobs = sys.argv[1] == "patched", Path(sys.argv[2]), int(sys.argv[3])
    if patched:
        import influx_magic.mage_patches
        assert influx_magic.mage_patches.apply()
    from mage_ai.orchestration.queue.config import QueueConfig
    from mage_ai.orchestration.queue.process_queue import ProcessQueue


    class SlowToPickle:
        # The queue's feeder thread pickles the item: this holds it back from the pipe.
        def __init__(self, name):
            self.name = name

        def __reduce__(self):
            time.sleep(3)
            return (str, (self.name,))


    def touch(name):
        (out / name).write_text("ran")


    queue = ProcessQueue(QueueConfig(concurrency=2))
    queue.start()
    names = [f"job-{i}" for i in range(jobs)]
    for name in names:
        queue.enqueue(name, touch, SlowToPickle(name))

    def settled():
        ran = sorted(p.name for p in out.iterdir())
        if ran == names:
            return ran, []
        # Stranded: the item is on the pipe, `has_job` says queued, and no pool will read it.
        stranded = [
            n for n in names
            if not queue.is_worker_pool_alive() and not queue.queue.empty() and queue.has_job(n)
        ]
        return (ran, stranded) if stranded else None

    deadline = time.monotonic() + 120
    while (result := settled()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    ran, stranded = result or (sorted(p.name for p in out.iterdir()), None)
    print("RESULT " + json.dumps({"ran": ran, "stranded": stranded}), flush=True)
    queue.stop()
    """
)


def run_scenario(tmp_path: Path, mode: str, jobs: int) -> dict:
    out = tmp_path / mode
    out.mkdir()
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "MAGE_DATA_DIR": str(tmp_path / "mage"),
        "MAGE_DATABASE_CONNECTION_URL": f"sqlite:///{tmp_path / 'mage.db'}",
    }
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    done = subprocess.run(
        [sys.executable, str(script), mode, str(out), str(jobs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:]
    return json.loads(lines[0].removeprefix("RESULT "))


def test_unpatched_mage_strands_a_job_the_feeder_had_not_written(tmp_path) -> None:
    result = run_scenario(tmp_path, "unpatched", jobs=1)
    assert result == {"ran": [], "stranded": ["job-0"]}


def test_patched_pool_runs_every_job_however_late_its_item_arrives(tmp_path) -> None:
    result = run_scenario(tmp_path, "patched", jobs=3)
    assert result == {"ran": ["job-0", "job-1", "job-2"], "stranded": []}


def test_other_mage_versions_are_left_unpatched(caplog) -> None:
    from mage_ai.orchestration.queue.process_queue import ProcessQueue

    before = ProcessQueue.is_worker_pool_alive
    assert mage_patches.apply("0.9.81") is False
    assert ProcessQueue.is_worker_pool_alive is before
    assert "0.9.81" in caplog.text and "unpatched" in caplog.text
