"""Declarative checks beside the learned detector: limits, no-data, window tests, SQL checks.

Declared in the checks file (`CHECKS_FILE`, default `influx-magic/checks.yaml`), validated with
errors naming the line (`checkfile`), judged each run against InfluxDB (`runner`, one module per
kind: `limit`, `no_data`, `window_test`, `sql_check`), their findings kept as per-machine
episodes that open once and resolve once (`findings`), committed with the run's state.

    checks = load_checks(path)                                     # ChecksFileError names the line
    state = ChecksState.from_json(fleet_state.extra.get("checks"))
    report = run_checks(checks, state, Evaluation(client, now))    # events, errors
    fleet_state.extra["checks"] = state.to_json()
"""

from influx_magic.checks.checkfile import ChecksFileError, load_checks, parse_checks
from influx_magic.checks.evaluation import CheckFailed, Evaluation
from influx_magic.checks.findings import CheckEpisode, CheckEvent, ChecksState, CheckState
from influx_magic.checks.runner import ChecksReport, run_checks
from influx_magic.checks.spec import Check

__all__ = [
    "Check",
    "CheckEpisode",
    "CheckEvent",
    "CheckFailed",
    "CheckState",
    "ChecksFileError",
    "ChecksReport",
    "ChecksState",
    "Evaluation",
    "load_checks",
    "parse_checks",
    "run_checks",
]
