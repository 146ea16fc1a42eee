"""The run's declared checks: read `CHECKS_FILE`, judge every check, hand on their alerts.

`judge_checks(run, state)` is the one call the checker step makes for them. It reads the
checks file (a mistake raises `ChecksFileError` naming the line, before any message goes out,
so the run fails loudly and is redone once the file is fixed), judges each check against
InfluxDB at the current time (findings recur and resolve as the detector's episodes do: quiet
for `ALERT_RECUR_GAP_MIN` to resolve, at most one follow-up an hour), keeps the checks' state
in the run's pending state (`state.extra["checks"]`, committed with everything else) and
returns their findings as `CheckAlert`s. Those go to the same delivery (ledger, outbox, digests) and the same
`anomaly_episodes` table as the detector's alerts, and whatever mutes or acknowledges the
detector's alerts there applies to them too. A check that cannot be judged this run (its query
fails) is reported in the summary; the other checks and the run go on.

An experiment run (a detector configuration other than the pipeline's defaults, which keeps
its own state, tables and plots) reads the file, so a mistake still shows, but does not judge
the checks: they do not depend on the detector, and judging them there would find the
scheduled runs' findings a second time. With the fleet in shards (`FLEETWATCH_SHARDS` > 1)
shard 0's run judges the checks for the whole fleet and keeps their state and messages in its
shard's state, ledger and outbox; the other shards' runs do not judge them (each would find
every machine's findings again, once per shard).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pandas as pd

from fleetwatch.state import FleetState
from influx_magic.alerts import CheckAlert
from influx_magic.checks.checkfile import load_checks
from influx_magic.checks.evaluation import Evaluation
from influx_magic.checks.findings import ChecksState
from influx_magic.checks.runner import ChecksReport, run_checks
from influx_magic.influx import connect
from influx_magic.run_context import PipelineSettings
from influx_magic.run_transaction import Run
from magic_common.envsettings import project_root

STATE_KEY = "checks"


@dataclass(frozen=True)
class JudgedChecks:
    """The alerts of one run's declared checks, and what happened, for the log."""

    alerts: list[CheckAlert]
    report: ChecksReport
    declared: int
    skipped: str | None = None  # why the checks were not judged in this run

    def summary(self) -> str:
        if self.skipped:
            return f"checks: not judged ({self.skipped})"
        if not self.declared and not self.alerts:
            return "checks: none declared"
        return self.report.summary()


def judge_checks(run: Run, state: FleetState, *, now: pd.Timestamp | None = None) -> JudgedChecks:
    """Judge the declared checks at `now` (default: the current time), updating `state`."""
    settings = run.settings
    checks = load_checks(settings.checks_file, shown_as=_shown(settings))
    if run.configuration.experiment:
        why = "an experiment run; the runs with the pipeline's defaults judge them"
        return JudgedChecks([], ChecksReport(), len(checks), skipped=why)
    if settings.shard.index != 0:
        why = f"{settings.shard.describe()}; shard 0 judges them for the whole fleet"
        return JudgedChecks([], ChecksReport(), len(checks), skipped=why)
    checks_state = ChecksState.from_json(state.extra.get(STATE_KEY))
    if not checks and not checks_state.checks:
        return JudgedChecks([], ChecksReport(), 0)
    identities = state.extra.get("machines", {})
    providers = {str(machine): str(provider) for machine, provider in identities.values()}
    moment = now if now is not None else pd.Timestamp.now(tz="UTC")
    with contextlib.closing(connect(settings.influx)) as client:
        evaluation = Evaluation(
            client,
            moment,
            providers=providers,
            recur_gap=pd.Timedelta(settings.recur_gap),
            follow_up=pd.Timedelta(seconds=state.episodes.follow_up_seconds),
        )
        report = run_checks(checks, checks_state, evaluation)
    state.extra[STATE_KEY] = checks_state.to_json()
    return JudgedChecks([CheckAlert(event) for event in report.events], report, len(checks))


def _shown(settings: PipelineSettings) -> str:
    """The checks file as errors name it: relative to the project when inside it."""
    path = settings.checks_file
    try:
        return str(path.relative_to(project_root(settings.env)))
    except ValueError:
        return str(path)
