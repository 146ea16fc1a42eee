"""One row per machine and time, ready to score.

Each row is keyed by `unique_id = slugify(provider)-machineID`; the sensor columns become
floats; rows are sorted by time and machine. A row without a time, a machineID, a provider or
any finite sensor value is dropped, and so is the earlier of two rows for the same machine and
time; the log counts them by reason. A single missing value stays NaN: the detector carries the
machine's last value forward.
"""

if "transformer" not in globals():
    from mage_ai.data_preparation.decorators import test, transformer

from influx_magic.telemetry import prepare_telemetry


@transformer
def transform_data(data, *args, **kwargs):
    prepared = prepare_telemetry(data)
    print(f"transform_data: {prepared.summary()}")
    return prepared.frame


@test
def test_output(output, *args) -> None:
    assert not output.duplicated(["unique_id", "time"]).any()
    assert output["time"].is_monotonic_increasing
