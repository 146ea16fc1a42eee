"""The run's results to InfluxDB, then the run is committed.

Scores go to table `anomaly_scores` (tags machineID, provider; fields score, is_anomaly,
episode_id), every episode the run changed to `anomaly_episodes` (with its status: held, open,
resolved), in the database the loader read, and the declared checks' findings there too (with
`check_name`). Only once the writes succeeded are the run's models, episodes and watermark
committed, in one atomic rename of the state file: a run that fails anywhere changes nothing,
and the next run redoes it.
"""

if "data_exporter" not in globals():
    from mage_ai.data_preparation.decorators import data_exporter

from influx_magic.results import write_check_findings, write_results
from influx_magic.run_transaction import current_run


@data_exporter
def export_anomaly_scores(data, *args, **kwargs):
    with current_run(kwargs) as run:
        state = run.pending_state()
        alerts = run.alerts()
        identities = state.extra.get("machines", {})
        written = write_results(run.settings.influx, data, run.episodes(), identities)
        findings = write_check_findings(run.settings.influx, alerts)  # the declared checks'
        run.commit()
        watermark = None if state.watermark is None else state.watermark.isoformat()
        print(
            f"export_anomaly_scores: {written.scores} score(s), {written.episodes} episode(s), "
            f"{findings} check finding(s) written; committed {run.state_path.name} at "
            f"watermark {watermark}"
        )
    return {
        "scores_written": written.scores,
        "episodes_written": written.episodes,
        "anomalous_points": written.anomalous_points,
        "events": [f"{a.kind} {a.unique_id}" for a in alerts],
        "watermark": watermark,
        "state": str(run.state_path),
    }
