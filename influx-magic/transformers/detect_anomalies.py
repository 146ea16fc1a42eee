"""Half-Space Trees per machine, test-then-train, with the models kept between runs.

The new models are a pending state until export_anomaly_scores commits the run.
"""

if "transformer" not in globals():
    from mage_ai.data_preparation.decorators import test, transformer

from influx_magic.pipeline import RunContext, detect


@transformer
def detect_anomalies(data, *args, **kwargs):
    return detect(data, RunContext.from_kwargs(kwargs))


@test
def test_output(output, *args) -> None:
    assert {"score", "is_anomaly", "status"} <= set(output.columns)
    assert output.loc[output["status"] == "scored", "score"].between(0, 1).all()
