"""Declarative checks beside the learned detector: limits, no-data, window tests, SQL checks.

Declared in the checks file (`CHECKS_FILE`, default `influx-magic/checks.yaml`), validated with
errors naming the line (`checkfile`), judged each run against InfluxDB (`runner`, one module per
kind: `limit`, `no_data`, `window_test`, `sql_check`), their findings kept as per-machine
episodes that open once, recur within the recur gap and resolve once (`findings`), committed
with the run's state.

    checks = checkfile.load_checks(path)                    # ChecksFileError names the line
    state = findings.ChecksState.from_json(fleet_state.extra.get("checks"))
    report = runner.run_checks(checks, state, evaluation.Evaluation(client, now))
    fleet_state.extra["checks"] = state.to_json()             # committed with the run

The pipeline's step is `influx_magic.declared_checks`. This package's `__init__` imports nothing,
so the alert events can use `findings` without pulling in the evaluators (which use InfluxDB).
"""
