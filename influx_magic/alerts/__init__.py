"""Alerts for anomaly episodes: Slack messages, delivered exactly once from our side.

Modules: `events` (`Alert`: the episode tracker's event and who the machine is; `CheckAlert`:
a declared check's finding), `slack`
(Block Kit bodies), `outputs` (the `Notifier` interface and one module per target), `store`
(ledger and outbox files), `delivery` (`AlertDelivery`: retries, digests, outbox), `secrets`
(keeping webhook URLs out of logs). Typical use:

    notifier = SlackWebhookNotifier.from_settings()        # None when SLACK_WEBHOOK_URL is empty
    delivery = AlertDelivery(notifier, path_setting("FLEETWATCH_STATE_DIR"), digest_min=10)
    report = delivery.run(alerts, plot_urls={unique_id: url}, run_url=None)
"""

from influx_magic.alerts.delivery import AlertDelivery, DeliveryReport, RetryPolicy
from influx_magic.alerts.events import Alert, CheckAlert
from influx_magic.alerts.outputs import DeliveryError, Notifier
from influx_magic.alerts.outputs.slack_webhook import SlackWebhookNotifier
from influx_magic.alerts.store import StoreError

__all__ = [
    "Alert",
    "AlertDelivery",
    "CheckAlert",
    "DeliveryError",
    "DeliveryReport",
    "Notifier",
    "RetryPolicy",
    "SlackWebhookNotifier",
    "StoreError",
]
