"""Slack incoming webhook (or anything that accepts Slack's webhook JSON).

Sample configuration (`.env`):

    # Incoming-webhook URL from https://api.slack.com/apps -> Incoming Webhooks. A secret:
    # it is never logged or printed; errors show only https://hooks.slack.com/***.
    SLACK_WEBHOOK_URL=https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX
    # Links in the messages point here: PUBLIC_BASE_URL/plots/<file>.png
    PUBLIC_BASE_URL=http://127.0.0.1:5006

Without `SLACK_WEBHOOK_URL` the notifier still renders, but sends nothing: messages wait in the
outbox until a run has the URL.

Each attempt is one `POST` with `Content-Type: application/json` and `Idempotency-Key:` the
event's key (`<episode_id>:opened`, `...:recurring:<n>`, `...:resolved`; digests:
`digest:<kind>:<hash>`). Slack
ignores that header; a receiver that deduplicates can use it, and our own ledger uses the same
key. Success is any 2xx. 408, 429 and 5xx are retryable, and a `Retry-After` header (seconds or
an HTTP date) is passed on to the retry loop; other statuses are not retried in the same run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from influx_magic import __version__
from influx_magic.alerts import slack
from influx_magic.alerts.events import Alert
from influx_magic.alerts.outputs import DeliveryError
from influx_magic.alerts.secrets import SecretURL, redacted_logs
from influx_magic.settings import setting

RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


class SlackWebhookNotifier:
    """Posts Slack messages to one incoming webhook.

    >>> SlackWebhookNotifier("https://hooks.slack.com/services/T0/B0/secretsecret")
    SlackWebhookNotifier(url='https://hooks.slack.com/***')
    >>> SlackWebhookNotifier(None).configured
    False
    """

    name = "slack"
    not_configured = "SLACK_WEBHOOK_URL is empty"

    def __init__(self, url: str | SecretURL | None, *, timeout: float = 10.0) -> None:
        self._url = url if isinstance(url, SecretURL) or url is None else SecretURL(url)
        self.timeout = timeout

    @classmethod
    def from_settings(cls, env: Mapping[str, str] | None = None) -> SlackWebhookNotifier:
        """The notifier for `SLACK_WEBHOOK_URL` (not `configured` when it is empty)."""
        return cls(setting("SLACK_WEBHOOK_URL", env) or None)

    @property
    def configured(self) -> bool:
        return self._url is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={None if self._url is None else self._url.masked!r})"

    def render_event(
        self, event: Alert, *, plot_url: str | None, run_url: str | None
    ) -> dict[str, Any]:
        return slack.episode_message(event, plot_url=plot_url, run_url=run_url)

    def render_digest(
        self,
        events: Sequence[Alert],
        *,
        plot_urls: Mapping[str, str],
        run_url: str | None,
    ) -> dict[str, Any]:
        return slack.digest_message(events, plot_urls=plot_urls, run_url=run_url)

    def render_late(self, payload: Mapping[str, Any], late_by: float) -> dict[str, Any]:
        return slack.late_message(payload, late_by)

    def send(self, key: str, payload: Mapping[str, Any]) -> None:
        if self._url is None:
            raise DeliveryError(self.not_configured, retryable=True)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": key,
            "User-Agent": f"fleetwatch/{__version__}",
        }
        with redacted_logs(self._url):
            try:
                response = requests.post(
                    self._url.reveal(),
                    data=body,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as error:
                # `from None`: the original exception's text and traceback quote the URL.
                raise DeliveryError(
                    f"{self._url.masked}: {type(error).__name__}: {self._url.redact(str(error))}",
                    retryable=True,
                ) from None
        if 200 <= response.status_code < 300:
            return
        detail = self._url.redact(response.text[:200].strip())
        raise DeliveryError(
            f"{self._url.masked}: HTTP {response.status_code}" + (f" {detail}" if detail else ""),
            retryable=response.status_code in RETRYABLE_STATUS,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            status=response.status_code,
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP date.

    >>> parse_retry_after("2")
    2.0
    >>> parse_retry_after("Wed, 01 May 2024 10:00:30 GMT", now=1714557600.0)
    30.0
    >>> parse_retry_after("soon") is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))
