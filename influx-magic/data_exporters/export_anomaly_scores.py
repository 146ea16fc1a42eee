"""The run's results to InfluxDB, then the run is committed.

Scores go to table `anomaly_scores` (tags machineID, provider; fields score, is_anomaly,
episode_id), episode events to `anomaly_episodes`, in the database the loader read. Only once
both writes succeeded are the run's models, episodes and watermark committed, in one atomic
rename of the state file: a run that fails anywhere changes nothing, and the next run redoes it.
"""

if "data_exporter" not in globals():
    from mage_ai.data_preparation.decorators import data_exporter

from influx_magic.results import write_results
from influx_magic.run_transaction import current_run


@data_exporter
def export_anomaly_scores(data, *args, **kwargs):
    with current_run(kwargs) as run:
        alerts = run.alerts()
        written = write_results(run.settings.influx, data, alerts)
        state = run.pending_state()
        run.commit()
        watermark = None if state.watermark is None else state.watermark.isoformat()
        print(
            f"export_anomaly_scores: {written.scores} score(s), {written.episodes} episode "
            f"event(s) written; committed {run.state_path.name} at watermark {watermark}"
        )
    return {
        "scores_written": written.scores,
        "episode_events_written": written.episodes,
        "anomalous_points": written.anomalous_points,
        "events": [f"{a.kind} {a.unique_id}" for a in alerts],
        "watermark": watermark,
        "state": str(run.state_path),
    }
