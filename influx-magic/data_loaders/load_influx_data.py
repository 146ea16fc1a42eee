"""Telemetry from InfluxDB 3: the rows of `machine_data` written since the last committed run.

Connects to INFLUX_HOST, database INFLUX_DATABASE, with INFLUX_TOKEN (`.env` or the
environment) and reads, in 30-minute slices with `$since` bound as a query parameter:

    SELECT time, "machineID", "provider", <features> FROM "machine_data"
    WHERE time >= $since ORDER BY time, "machineID"

`since` is the committed watermark minus 30 s for late points; the first run reads
`lookback_minutes` back. The read ends at the newest point of the whole fleet, or after
FLEETWATCH_CATCHUP_MINUTES of data when further behind (the next run goes on). With
FLEETWATCH_SHARDS > 1 the runtime variable `shard` picks the machines (a hash range of the
series key, bound as parameters too) and the shard's own state.

The runtime variables `threshold`, `features` and any other detector setting by name
(`z_alarm`, `persistence`, ...) choose the detector configuration. One other than this
pipeline's variables is an experiment: its own models, tables, plots, and no alerts unless
`send_alerts` is true; the log says where its results go.
"""

if "data_loader" not in globals():
    from mage_ai.data_preparation.decorators import data_loader, test

from influx_magic.run_context import PipelineSettings, RunVariables
from influx_magic.run_transaction import start_run
from influx_magic.telemetry import read_telemetry


@data_loader
def load_influx_data(*args, **kwargs):
    settings = PipelineSettings.from_env().for_shard(kwargs.get("shard"))
    variables = RunVariables.from_kwargs(kwargs)
    with start_run(kwargs, settings, variables) as run:
        frame = read_telemetry(run)
        first = "first run, " if run.first else ""
        shard = f"{settings.shard.describe()}, " if not settings.shard.whole else ""
        print(
            f"load_influx_data: {len(frame)} row(s) of {frame['machineID'].nunique()} "
            f"machine(s) since {run.since.isoformat()} ({shard}{first}{settings.influx})"
            f"{run.behind()}; {run.configuration.describe()}"
        )
    return frame


@test
def test_output(output, *args) -> None:
    assert {"time", "machineID", "provider"} <= set(output.columns), output.columns
