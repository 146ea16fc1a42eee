"""One row per machine and time: unique_id = slugify(provider)-machineID, features as floats,
sorted, duplicates dropped; rows that cannot be used are dropped and counted."""

if "transformer" not in globals():
    from mage_ai.data_preparation.decorators import test, transformer

from influx_magic.pipeline import RunContext, prepare_telemetry


@transformer
def transform_data(data, *args, **kwargs):
    return prepare_telemetry(data, RunContext.from_kwargs(kwargs))


@test
def test_output(output, *args) -> None:
    assert not output.duplicated(["unique_id", "time"]).any()
    assert output["time"].is_monotonic_increasing
