"""Half-Space Trees per machine, scoring each new point before learning it.

The models are this configuration's `FleetDetector` (`fleetwatch.detector.DetectorConfig`:
features, threshold 0.8, 25 trees of height 4 over a window of 250 readings, the sensors' level,
step, stuck-run and load-fit views), kept between runs in the state file. Each point gets a
`score` in [0, 1], `is_anomaly` (above the threshold inside an episode), episode flags and each
sensor's deviation (`dev_<feature>`). A machine's own threshold or persistence in
`machines.yaml`, and thresholds raised by false alarms, apply where points are flagged. Points the models have seen already are marked `stale`
and not learned again. The updated models stay pending until export_anomaly_scores commits the
run.
"""

if "transformer" not in globals():
    from mage_ai.data_preparation.decorators import test, transformer

from influx_magic.operations.pipeline_hooks import machine_rules
from influx_magic.run_transaction import current_run
from influx_magic.telemetry import detection_summary, record_identities


@transformer
def detect_anomalies(data, *args, **kwargs):
    with current_run(kwargs) as run:
        state = run.committed_state()
        rules = machine_rules(state, data, run.settings.root, run.settings.env)
        scored = state.detector.score_frame(data, rules=rules)
        record_identities(state, data)
        run.keep(state)
        print(f"detect_anomalies: {detection_summary(scored, run.config.threshold)}")
    return scored


@test
def test_output(output, *args) -> None:
    assert {"score", "is_anomaly", "status"} <= set(output.columns)
    assert output.loc[output["status"] == "scored", "score"].between(0, 1).all()
