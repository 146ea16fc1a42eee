"""Fixes for Mage 0.9.80 bugs that stop scheduled runs; `python -m influx_magic.mage_patches start ...`.

The bug (mage_ai/orchestration/queue/process_queue.py, 0.9.80): `ProcessQueue.enqueue` puts
the job on a `multiprocessing.Queue`, marks it `queued` in its shared `job_dict`, and starts a
worker-pool process unless one is alive. A `multiprocessing.Queue` hands the item to a feeder
thread, which pickles it and writes it to the pipe later, so:

1. a pool started right after `put` can find the pipe empty, see no workers, and exit at once;
2. a pool that is about to exit (idle) still counts as alive, so `enqueue` starts none, and
   the pool leaves without seeing the item that was not yet written.

Either way the item reaches the pipe with no pool to read it. Mage's `has_job` then answers
"queued and the queue is not empty", so the scheduler never re-enqueues the block run: the run
stays `running` for good and a trigger with `skip_if_previous_running` never runs again.

The fix keeps Mage's pool loop and changes only when it may exit, and what counts as alive:

* the pool leaves only when it has no workers, the pipe is empty, and no job in `job_dict` is
  still `queued` (enqueue marks it before it looks for a pool), so it waits for an item that is
  on its way, up to `LINGER_SECONDS`;
* before that last look it raises a per-pool `leaving` flag, and `is_worker_pool_alive` counts
  a leaving pool as gone; so an `enqueue` that raced the exit starts a new pool (at worst one
  pool too many, which exits when idle).

Only mage-ai 0.9.80 is patched (the code was read for that version); any other version logs a
warning and runs unpatched. Mage runs its scheduler in a child process that may be spawned
rather than forked, so the scheduler's entry point is wrapped to apply the patch there too.
"""

from __future__ import annotations

import importlib.metadata
import logging
import multiprocessing
import os
import sys
import time
from typing import Any

log = logging.getLogger("influx_magic.mage_patches")

PATCHED_VERSION = "0.9.80"
LINGER_SECONDS = 30.0  # how long an idle pool waits for a `queued` job's item to reach the pipe


def apply(installed: str | None = None) -> bool:
    """Patch Mage's ProcessQueue in this process (idempotent); False when the version differs.

    `installed` defaults to the installed mage-ai version.

    >>> apply("0.9.79")
    False
    """
    version = installed or importlib.metadata.version("mage-ai")
    if version != PATCHED_VERSION:
        log.warning(
            "mage-ai %s is not %s: its ProcessQueue is left unpatched (check whether the "
            "enqueue/worker-pool race is fixed upstream, then update influx_magic.mage_patches)",
            version,
            PATCHED_VERSION,
        )
        return False
    from mage_ai.orchestration.queue.process_queue import ProcessQueue
    from mage_ai.server import scheduler_manager

    ProcessQueue.start_worker_pool = _start_worker_pool
    ProcessQueue.is_worker_pool_alive = _is_worker_pool_alive
    if scheduler_manager.run_scheduler is not _run_scheduler:
        global _original_run_scheduler
        _original_run_scheduler = scheduler_manager.run_scheduler
        scheduler_manager.run_scheduler = _run_scheduler
        log.info("Mage's ProcessQueue patched (mage-ai %s enqueue/worker-pool race)", version)
    return True


_original_run_scheduler: Any = None


def _run_scheduler() -> None:
    """Mage's scheduler process entry point, patched first (a spawned child starts unpatched)."""
    apply()
    _original_run_scheduler()


def _start_worker_pool(self: Any) -> None:
    """As Mage's, with a `leaving` flag the pool raises before its last look at the queue."""
    self._fleetwatch_leaving = multiprocessing.Value("b", 0)
    self.worker_pool_proc = multiprocessing.Process(
        target=poll_job_and_execute,
        args=[
            self.queue,
            self.size,
            self.job_dict,
            self.redis_client,
            self.client_id,
            self._fleetwatch_leaving,
        ],
    )
    self.worker_pool_proc.start()


def _is_worker_pool_alive(self: Any) -> bool:
    """Alive and not leaving: only `enqueue` asks, to know whether a pool will take its job."""
    if self.worker_pool_proc is None or not self.worker_pool_proc.is_alive():
        return False
    leaving = getattr(self, "_fleetwatch_leaving", None)
    return leaving is None or not leaving.value


def poll_job_and_execute(
    queue: Any, size: int, job_dict: Any, redis_client: Any, client_id: str, leaving: Any
) -> None:
    """Mage 0.9.80's worker-pool loop; only its exit condition differs (see the module doc)."""
    from mage_ai.orchestration.queue.process_queue import (
        LIVENESS_TIMEOUT_SECONDS,
        JobStatus,
        Worker,
    )

    pid = os.getpid()
    workers: list[Any] = []
    idle_since: float | None = None
    while True:
        workers = [w for w in workers if w.is_alive()]
        print(f"[Process {pid}] Worker pool size: {len(workers)}")
        if not workers and queue.empty():
            leaving.value = 1
            now = time.monotonic()
            idle_since = idle_since or now
            waiting = any(status == JobStatus.QUEUED for status in job_dict.values())
            if queue.empty() and (not waiting or now - idle_since > LINGER_SECONDS):
                if waiting:
                    print(f"[Process {pid}] a queued job never reached the queue; leaving")
                break
            leaving.value = 0
        else:
            idle_since = None
        while not queue.empty():
            if len(workers) >= size:
                break
            worker = Worker(queue, job_dict)
            worker.start()
            workers.append(worker)
        time.sleep(1)
        if redis_client and client_id:
            redis_client.set(client_id, "1", ex=LIVENESS_TIMEOUT_SECONDS)


def main(argv: list[str] | None = None) -> None:
    """Run Mage's CLI (`start <project> ...`) with the patch applied first."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    apply()
    from mage_ai.cli.main import app

    sys.argv = ["mage", *(sys.argv[1:] if argv is None else argv)]
    app()


if __name__ == "__main__":
    main()
