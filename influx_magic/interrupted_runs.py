"""Runs a stopped Mage left unfinished are marked failed before Mage starts again.

Ctrl-C (or SIGTERM) on `make run` stops Mage while a pipeline run may be in progress; Mage does
not record that, so the run stays `running` in its database, and a `skip_if_previous_running`
schedule cancels every later run ("previous run is still running") until someone intervenes.
When Mage is not running nothing can be in progress, so `mage_server` calls
`fail_interrupted_runs` before it starts Mage: every pipeline run still `initial` or `running`,
and its unfinished block runs, become `failed` with the time they were found. The pipeline's own
state is safe either way: an interrupted run committed nothing, and the next run redoes it.

Mage 0.9.80 keeps statuses as the enum names (`RUNNING`, `FAILED`) in tables `pipeline_run` and
`block_run`; the database is `MAGE_DATABASE_CONNECTION_URL` (SQLite locally, any SQLAlchemy
URL in other deployments). A database Mage has not created yet has nothing to mark.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import bindparam, create_engine, inspect, text

UNFINISHED_RUNS = ("INITIAL", "RUNNING")
UNFINISHED_BLOCKS = ("INITIAL", "QUEUED", "RUNNING")


def fail_interrupted_runs(database_url: str) -> list[int]:
    """Mark the pipeline runs (and their block runs) left unfinished as failed; their ids."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            if not inspect(connection).has_table("pipeline_run"):
                return []
            found = connection.execute(
                text("SELECT id FROM pipeline_run WHERE status IN :statuses").bindparams(
                    bindparam("statuses", expanding=True)
                ),
                {"statuses": list(UNFINISHED_RUNS)},
            )
            ids = [int(row[0]) for row in found]
            if not ids:
                return []
            now = datetime.now(UTC).replace(tzinfo=None)
            connection.execute(
                text(
                    "UPDATE block_run SET status = 'FAILED', completed_at = :now "
                    "WHERE pipeline_run_id IN :ids AND status IN :statuses"
                ).bindparams(
                    bindparam("ids", expanding=True), bindparam("statuses", expanding=True)
                ),
                {"now": now, "ids": ids, "statuses": list(UNFINISHED_BLOCKS)},
            )
            connection.execute(
                text(
                    "UPDATE pipeline_run SET status = 'FAILED', completed_at = :now WHERE id IN :ids"
                ).bindparams(bindparam("ids", expanding=True)),
                {"now": now, "ids": ids},
            )
            return ids
    finally:
        engine.dispose()
