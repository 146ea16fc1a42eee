"""Evaluate every declared check once per run: findings as episode events, failures reported.

`run_checks(checks, state, evaluation)` judges each check against InfluxDB and returns the
events ("opened" / "recurring" / "resolved"; a finding resolves once quiet for the evaluation's
recur gap) and the checks that could not be judged, with their errors. A
check that fails (its SQL does not run, returns other columns, or InfluxDB refuses it) keeps
its state as it was and is reported; the other checks, and the pipeline, go on.

Editing a check in the file starts it over: its open findings resolve ("the check was changed")
and it is judged afresh. Removing (or disabling) a check resolves its open findings too, so no
episode stays open for a check that no longer runs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from influx_magic.checks.evaluation import CheckFailed, Evaluation
from influx_magic.checks.findings import CheckEvent, ChecksState, CheckState
from influx_magic.checks.limit import evaluate_limit
from influx_magic.checks.no_data import evaluate_no_data
from influx_magic.checks.spec import Check
from influx_magic.checks.sql_check import evaluate_sql
from influx_magic.checks.window_test import evaluate_window_test
from influx_magic.influx import InfluxError

EVALUATORS: dict[str, Callable[..., None]] = {
    "limit": evaluate_limit,
    "no_data": evaluate_no_data,
    "window_test": evaluate_window_test,
    "sql": evaluate_sql,
}


@dataclass
class ChecksReport:
    """What one run's checks did."""

    evaluated: list[str] = field(default_factory=list)
    events: list[CheckEvent] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # check name -> why it was not judged

    def summary(self) -> str:
        """One line for the run's log.

        >>> ChecksReport(["hot"], [], {"q": "table not found"}).summary()
        'checks: 1 evaluated, events: none; failed: q: table not found'
        """
        events = ", ".join(f"{e.kind} {e.episode.check} {e.episode.unique_id}" for e in self.events)
        text = f"checks: {len(self.evaluated)} evaluated, events: {events or 'none'}"
        if self.errors:
            text += "; failed: " + "; ".join(f"{name}: {why}" for name, why in self.errors.items())
        return text


def definition(check: Check) -> str:
    """What the check judges (its settings, not its line or description), as stable text."""
    settings = dataclasses.asdict(check)
    for name in ("line", "description"):
        settings.pop(name)
    return json.dumps({"kind": check.kind, **settings}, sort_keys=True, default=str)


def run_checks(checks: Sequence[Check], state: ChecksState, run: Evaluation) -> ChecksReport:
    """Judge `checks` at `run.now`, updating `state`; the events and the errors. Events come
    check by check, each check's in time order, after those of removed or changed checks."""
    report = ChecksReport()
    declared = {check.name for check in checks}
    for name in sorted(set(state.checks) - declared):
        _close_all(
            state.checks.pop(name), run, "the check was removed from the checks file", report
        )
    for check in checks:
        wanted = definition(check)
        current = state.checks.get(check.name)
        if current is not None and current.definition != wanted:
            _close_all(current, run, "the check was changed in the checks file", report)
            current = None
        work = copy.deepcopy(current) if current is not None else CheckState(check.kind, wanted)
        events: list[CheckEvent] = []
        try:
            EVALUATORS[check.kind](check, work, run, events)
        except (InfluxError, CheckFailed) as error:
            report.errors[check.name] = str(error)
            kept = current if current is not None else CheckState(check.kind, wanted)
            kept.last_error = str(error)
            state.checks[check.name] = kept
            continue
        work.settle(run.now_ns, run.recur_gap_ns, events)
        work.evaluated_at, work.last_error = run.now_ns, None
        state.checks[check.name] = work
        report.evaluated.append(check.name)
        report.events.extend(sorted(events, key=lambda e: (e.time, e.episode.unique_id)))
    return report


def _close_all(state: CheckState, run: Evaluation, why: str, report: ChecksReport) -> None:
    for uid in sorted(state.open):
        state.resolve(uid, run.now_ns, why, report.events)
