"""Anomaly episodes and the alerts about them.

The scored points become episodes (`fleetwatch.episodes.EpisodeTracker`): bursts of one machine
less than ALERT_RECUR_GAP_MIN apart are one episode, with one message when it opens ("Anomaly
on machine2 ..."), at most one "Still recurring" per hour while bursts go on, and one
"Resolved" once it has been quiet that long. Messages go to SLACK_WEBHOOK_URL (the local inbox
under `make run`), each linking to a PNG of the machine in FLEETWATCH_OUTPUT_DIR (served under
PUBLIC_BASE_URL/plots/) and, for scheduled runs, to the Mage run. A message that cannot be
delivered (no channel, channel down) waits in the outbox for the next run. Every row gets the
`episode_id` of the episode its burst belongs to. Episodes of a muted machine (`influx-magic
mute`, or a window in `machines.yaml`) are not alerted, and follow-ups of acknowledged ones are
not sent (`influx_magic.operations.alert_gate`).

The checks declared in CHECKS_FILE (default influx-magic/checks.yaml: limits, no-data, window
tests, SQL checks) are judged here too; their findings are episodes like the detector's, with
the check's name in their messages and in anomaly_episodes, muted and acknowledged like them;
each message links a plot of the checked sensor around the finding. A digest (more than
ALERT_DIGEST_MIN machines with the same kind of event) links plots for its first
ALERT_DIGEST_MIN machines only: a fleet-wide incident draws a few plots, not one per machine.
"""

if "custom" not in globals():
    from mage_ai.data_preparation.decorators import custom, test

from influx_magic.alert_plots import plot_alerts
from influx_magic.alerting import (
    alert_delivery,
    alerts_for,
    deliver_alerts,
    delivery_summary,
    episodes_summary,
)
from influx_magic.alerts import CheckAlert
from influx_magic.check_plots import plot_checks
from influx_magic.declared_checks import judge_checks
from influx_magic.operations.pipeline_hooks import screen_alerts
from influx_magic.run_transaction import current_run


@custom
def check_anomalies(data, *args, **kwargs):
    with current_run(kwargs) as run:
        state = run.pending_state()
        update = state.episodes.follow(data, now=run.clock)  # the fleet's data time
        checked = data.assign(episode_id=update.episode_ids)
        alerts = alerts_for(update.events, state)
        # The declared checks (CHECKS_FILE): their findings join the detector's alerts here.
        declared = judge_checks(run, state)
        alerts += declared.alerts
        screened = screen_alerts(alerts, run.settings.root, run.settings.env, run.configuration)
        delivery = alert_delivery(run)
        drawn = delivery.plotted(screened.send)  # a digest links a few plots, not all
        plots = plot_alerts(run, checked, [a for a in drawn if not isinstance(a, CheckAlert)])
        check_plots = plot_checks(run, [a for a in drawn if isinstance(a, CheckAlert)])
        urls = plots.urls | check_plots.urls
        report = deliver_alerts(delivery, screened.send, urls, run)
        run.keep(state, alerts, update.episodes)
        held = f" (not sent: {screened.summary()})" if screened.summary() else ""
        print(
            f"check_anomalies: episodes: {episodes_summary(update, len(state.episodes.open))}; "
            f"alerts: {delivery_summary(report)}{held}; {plots.summary()}; "
            f"{declared.summary()}; check {check_plots.summary()}"
        )
    return checked


@test
def test_output(output, *args) -> None:
    assert "episode_id" in output.columns
    inside = output["in_episode"].astype(bool) & (output["status"] == "scored")
    assert output.loc[inside, "episode_id"].notna().all()
