"""Scores to InfluxDB table anomaly_scores, episodes to anomaly_episodes; then the run's
detector state, episodes and watermark are committed together."""

if "data_exporter" not in globals():
    from mage_ai.data_preparation.decorators import data_exporter

from influx_magic.pipeline import RunContext, export


@data_exporter
def export_anomaly_scores(data, *args, **kwargs):
    return export(data, RunContext.from_kwargs(kwargs))
