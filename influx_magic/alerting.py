"""From episode events to delivered messages: who the machine is, and where the alert goes.

`alerts_for` turns the episode tracker's events into `Alert`s (the event unchanged, plus the
machine's machineID and provider and the threshold); `deliver_alerts` sends them to
`SLACK_WEBHOOK_URL` through `influx_magic.alerts.AlertDelivery` (ledger, outbox, retries,
digests) and says in one phrase what happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fleetwatch.episodes import EpisodeEvent
from fleetwatch.state import FleetState
from influx_magic.alerts import Alert, AlertDelivery, SlackWebhookNotifier
from influx_magic.run_context import MageRun, PipelineSettings


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


def deliver_alerts(
    alerts: list[Alert],
    plot_urls: Mapping[str, str],
    settings: PipelineSettings,
    mage: MageRun,
) -> str:
    """Send `alerts` (and whatever waits in the outbox) to SLACK_WEBHOOK_URL; what happened."""
    notifier = SlackWebhookNotifier.from_settings(settings.env)
    if notifier is None:
        return "not sent (SLACK_WEBHOOK_URL is empty)" if alerts else "none"
    delivery = AlertDelivery(notifier, settings.state_dir, digest_min=settings.digest_min)
    report = delivery.run(alerts, plot_urls=plot_urls, run_url=mage.url)
    if settings.remote is not None:  # what was delivered is kept even if the run fails later
        settings.remote.push([delivery.ledger.path, delivery.outbox.path])
    return (
        f"{len(report.sent)} sent, {len(report.already_delivered)} already delivered, "
        f"{report.outbox_left} message(s) waiting in the outbox"
    )
