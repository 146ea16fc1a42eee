"""Telemetry from InfluxDB 3: the rows of `machine_data` written since the last committed run.

Connects to INFLUX_HOST, database INFLUX_DATABASE, with INFLUX_TOKEN (`.env` or the
environment) and reads, in 30-minute slices with `$since` bound as a query parameter:

    SELECT time, "machineID", "provider", <features> FROM "machine_data"
    WHERE time >= $since ORDER BY time, "machineID"

`since` is the committed watermark minus 30 s for late points; the first run reads
`lookback_minutes` back. The runtime variables `threshold` and `features` choose the detector
configuration: one other than the defaults keeps its own models and watermark.
"""

if "data_loader" not in globals():
    from mage_ai.data_preparation.decorators import data_loader, test

from influx_magic.run_context import MageRun, PipelineSettings, RunVariables
from influx_magic.run_transaction import start_run
from influx_magic.telemetry import read_telemetry


@data_loader
def load_influx_data(*args, **kwargs):
    settings = PipelineSettings.from_env()
    variables = RunVariables.from_kwargs(kwargs)
    mage = MageRun.from_kwargs(kwargs, settings.mage_public_host)
    with start_run(settings, variables, mage) as run:
        frame = read_telemetry(settings.influx, since=run.since, features=run.config.features)
        first = "first run, " if run.first else ""
        print(
            f"load_influx_data: {len(frame)} row(s) since {run.since.isoformat()} "
            f"({first}{settings.influx})"
        )
    return frame


@test
def test_output(output, *args) -> None:
    assert {"time", "machineID", "provider"} <= set(output.columns), output.columns
