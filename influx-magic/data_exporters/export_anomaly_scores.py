"""The run's results to InfluxDB, then the run is committed.

Scores go to table `anomaly_scores` (tags machineID, provider; fields score, is_anomaly,
episode_id, unique_id, config_id, warm, dev_<feature>), every episode the run changed to
`anomaly_episodes` (with its status: held, open, resolved, or muted for a muted machine's),
the declared checks' findings there too (with `check_name`), operator actions not yet in
`anomaly_feedback`, in the database the loader read. An experiment (a configuration other than
the pipeline's defaults) writes to `anomaly_scores_<config_id>` and `anomaly_episodes_<config_id>`
instead (and judges no checks). Only once the writes succeeded are the run's models, episodes
and watermark committed, in one atomic rename of the state file: a run that fails anywhere
changes nothing, and the next run redoes it.
"""

if "data_exporter" not in globals():
    from mage_ai.data_preparation.decorators import data_exporter

from influx_magic.operations.pipeline_hooks import episode_statuses, write_feedback
from influx_magic.results import write_check_findings, write_results
from influx_magic.run_transaction import current_run


@data_exporter
def export_anomaly_scores(data, *args, **kwargs):
    with current_run(kwargs) as run:
        state = run.pending_state()
        alerts = run.alerts()
        identities = state.extra.get("machines", {})
        episodes = run.episodes()
        statuses = episode_statuses(episodes, run.settings.root)
        written = write_results(
            run.settings.influx, run.configuration, data, episodes, identities, statuses
        )
        findings = write_check_findings(run.settings.influx, alerts)  # the declared checks'
        feedback = write_feedback(run.settings.root, run.settings.influx)
        run.commit()
        watermark = None if state.watermark is None else state.watermark.isoformat()
        print(
            f"export_anomaly_scores: {written.scores} score(s) to "
            f"{run.configuration.scores_table}, {written.episodes} episode(s) to "
            f"{run.configuration.episodes_table}, {findings} check finding(s)"
            f"{'; ' + feedback if feedback else ''}; committed {run.state_path.name} at "
            f"watermark {watermark}"
        )
    return {
        "scores_written": written.scores,
        "episodes_written": written.episodes,
        "anomalous_points": written.anomalous_points,
        "events": [f"{a.kind} {a.unique_id}" for a in alerts],
        "watermark": watermark,
        "state": str(run.state_path),
        "config_id": run.configuration.config_id,
        "scores_table": run.configuration.scores_table,
        "episodes_table": run.configuration.episodes_table,
    }
