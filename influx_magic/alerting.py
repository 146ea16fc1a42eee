"""From episode events to delivered messages: who the machine is, and where the alert goes.

`alerts_for` turns the episode tracker's events into `Alert`s (the event unchanged, plus the
machine's machineID and provider and the threshold); `alert_delivery` opens the run's
`influx_magic.alerts.AlertDelivery` to `SLACK_WEBHOOK_URL` (ledger, outbox, retries, digests),
which says which alerts get a plot (`plotted`: a digest links only a few), and `deliver_alerts`
sends them through it. Without a reachable channel an alert waits in the outbox (`<state
dir>/alerts/slack/`) and the next run that has one delivers it, in order, marked late once
`ALERT_LATE_AFTER_H` have passed. `episodes_summary` and `delivery_summary` say in a phrase
what happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fleetwatch.episodes import EVENT_KINDS, EpisodeEvent, EpisodeUpdate
from fleetwatch.state import FleetState
from influx_magic.alerts import (
    Alert,
    AlertDelivery,
    CheckAlert,
    DeliveryReport,
    SlackWebhookNotifier,
)
from influx_magic.run_transaction import Run


def alerts_for(events: Iterable[EpisodeEvent], state: FleetState) -> list[Alert]:
    """The alerts for `events`, each naming its machine by the identity the detector recorded
    in the state (a machine that went silent has no rows in this run to take it from)."""
    identities = state.extra.get("machines", {})
    threshold = state.detector.config.threshold
    alerts = []
    for event in events:
        machine, provider = ([*identities.get(event.episode.machine, [])] + [None, None])[:2]
        alerts.append(Alert(event, machine or event.episode.machine, provider, threshold))
    return alerts


def alert_delivery(run: Run) -> AlertDelivery:
    """The run's delivery to SLACK_WEBHOOK_URL, its ledger and outbox read once: ask it which
    alerts get a plot (`AlertDelivery.plotted`), then hand it to `deliver_alerts`."""
    settings = run.settings
    return AlertDelivery(
        SlackWebhookNotifier.from_settings(settings.env),
        run.configuration.alert_dir(settings.state_dir),
        digest_min=settings.digest_min,
        late_after=settings.late_after.total_seconds(),
    )


def deliver_alerts(
    delivery: AlertDelivery,
    alerts: list[Alert | CheckAlert],
    plot_urls: Mapping[str, str],
    run: Run,
) -> DeliveryReport:
    """Queue `alerts` in `delivery` (from `alert_delivery(run)`) and send the outbox
    (`plot_urls`: by alert key). Call it inside `with run:`: the run's lock keeps two runs from
    sending the same alert. With the state dir at a URL, the ledger and outbox are written back
    at once: what was delivered stays delivered even if the run fails later."""
    if not run.configuration.sends_alerts:
        return DeliveryReport(withheld="an experiment: runtime variable send_alerts=true sends")
    report = delivery.run(alerts, plot_urls=plot_urls, run_url=run.mage.url)
    if run.settings.remote is not None:
        run.settings.remote.push([delivery.ledger.path, delivery.outbox.path])
    return report


def episodes_summary(update: EpisodeUpdate, open_now: int) -> str:
    """Episodes opened, recurring, resolved and held back in this run, and how many are open."""
    counts = {kind: sum(e.kind == kind for e in update.events) for kind in EVENT_KINDS}
    held = sum(e.status == "held" for e in update.episodes)
    return (
        f"{counts['opened']} opened, {counts['recurring']} recurring, "
        f"{counts['resolved']} resolved, {held} held back by the cooldown ({open_now} open)"
    )


def delivery_summary(report: DeliveryReport) -> str:
    """Alerts sent and queued, and why they wait when no channel is configured."""
    if report.withheld:
        return f"not sent ({report.withheld})"
    text = f"{len(report.sent)} sent, {report.outbox_left} waiting in the outbox"
    if report.late:
        text += f" ({len(report.late)} sent late)"
    if report.not_configured and report.outbox_left:
        text += f": {report.not_configured}, the next run with a channel sends them"
    elif report.errors:
        text += f": {report.errors[-1]}"
    return text
