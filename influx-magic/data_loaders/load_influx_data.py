"""Telemetry from InfluxDB 3 since the last committed watermark (first run: lookback_minutes).

Connection from INFLUX_HOST, INFLUX_TOKEN and INFLUX_DATABASE; logic in influx_magic.pipeline.
"""

if "data_loader" not in globals():
    from mage_ai.data_preparation.decorators import data_loader, test

from influx_magic.pipeline import RunContext, load_telemetry


@data_loader
def load_influx_data(*args, **kwargs):
    return load_telemetry(RunContext.from_kwargs(kwargs))


@test
def test_output(output, *args) -> None:
    assert {"time", "machineID", "provider"} <= set(output.columns), output.columns
