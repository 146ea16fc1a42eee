"""Deliver alert events exactly once from our side: ledger, outbox, retries, digests.

One `AlertDelivery.run(events)` per pipeline run:

1. Events whose idempotency key (`<episode_id>:<opened|resolved>`) is in the ledger were
   delivered by an earlier run (a re-done run re-emits them) and are skipped; events already
   waiting in the outbox are not queued twice.
2. The rest are rendered — one message each, or one digest per kind when more than
   `digest_min` machines opened (or resolved) episodes in this run — and written to the outbox
   *before* any is sent, so a crash mid-run loses nothing.
3. The outbox is sent oldest first, so the previous run's leftovers go out before new alerts.
   Each message is tried with exponential backoff, waiting as long as a 429's `Retry-After`
   asks (up to `RetryPolicy.max_retry_after`). After each success its keys go into the ledger
   at once and it leaves the outbox.
4. When a message fails for a reason that may pass (HTTP 5xx/429, timeout, refused), the
   target is taken to be down for this run: the remaining messages stay in the outbox without
   being tried, and the next run starts with them. A message the target rejects outright
   (e.g. 400, 404) stays in the outbox too, with the error recorded, and the others are still
   tried.

A message that reached the target but whose ledger write did not happen (the process was
killed in between) is sent again next run with the same `Idempotency-Key`: from our side this is
the only window, and a receiver that honours the header closes it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from influx_magic.alerts.events import Alert
from influx_magic.alerts.outputs import DeliveryError, Notifier
from influx_magic.alerts.store import Ledger, Outbox, PendingMessage

log = logging.getLogger("influx_magic.alerts")

DEFAULT_DIGEST_MIN = 10


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one run tries one message.

    Waits double from `backoff` up to `max_backoff`, with ±25 % jitter so a fleet of
    pipelines does not retry in step. A `Retry-After` longer than `max_retry_after` ends the
    run's attempts: the message waits in the outbox instead of holding the run.
    """

    attempts: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")

    def wait(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before attempt `attempt + 1`, or None when the run should give up.

        >>> RetryPolicy(backoff=1.0).wait(1, retry_after=2.0)
        2.0
        >>> RetryPolicy(max_retry_after=60).wait(1, retry_after=3600.0) is None
        True
        """
        if attempt >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base * random.uniform(0.75, 1.25)


@dataclass
class DeliveryReport:
    """What one run did, by idempotency key (digests count every event they cover)."""

    sent: list[str] = field(default_factory=list)
    already_delivered: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    messages_sent: int = 0
    outbox_left: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is left waiting in the outbox."""
        return self.outbox_left == 0


class AlertDelivery:
    """Delivers events through one notifier, with its ledger and outbox under `state_dir`.

    >>> import tempfile
    >>> from influx_magic.alerts.outputs.slack_webhook import SlackWebhookNotifier
    >>> delivery = AlertDelivery(
    ...     SlackWebhookNotifier("https://hooks.slack.com/services/T/B/secret-part"),
    ...     tempfile.mkdtemp())
    >>> delivery.run([]).sent
    []
    """

    def __init__(
        self,
        notifier: Notifier,
        state_dir: str | Path,
        *,
        digest_min: int = DEFAULT_DIGEST_MIN,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.notifier = notifier
        folder = Path(state_dir) / "alerts" / notifier.name
        self.ledger = Ledger(folder / "ledger.json")
        self.outbox = Outbox(folder / "outbox.json")
        self.digest_min = digest_min
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    def run(
        self,
        events: Iterable[Alert],
        *,
        plot_urls: Mapping[str, str] | None = None,
        run_url: str | None = None,
    ) -> DeliveryReport:
        """Queue `events` and send the whole outbox.

        `plot_urls` maps unique_id to the public URL of that machine's plot; `run_url` links
        the Mage run (omit it for `mage run`, which has no run page).
        """
        report = DeliveryReport()
        fresh = self._fresh(events, report)
        self.outbox.add(self._render(fresh, plot_urls or {}, run_url))
        self._send_outbox(report)
        report.outbox_left = len(self.outbox)
        return report

    def _fresh(self, events: Iterable[Alert], report: DeliveryReport) -> list[Alert]:
        pending = self.outbox.covered_keys()
        fresh: dict[str, Alert] = {}
        for event in events:
            if event.key in self.ledger:
                report.already_delivered.append(event.key)
            elif event.key not in pending:
                fresh.setdefault(event.key, event)
        return list(fresh.values())

    def _render(
        self, events: list[Alert], plot_urls: Mapping[str, str], run_url: str | None
    ) -> list[PendingMessage]:
        messages = []
        for kind in ("opened", "resolved"):
            group = [e for e in events if e.kind == kind]
            if len({e.unique_id for e in group}) > self.digest_min:
                keys = tuple(e.key for e in group)
                digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
                payload = self.notifier.render_digest(group, plot_urls=plot_urls, run_url=run_url)
                messages.append(PendingMessage(f"digest:{kind}:{digest}", keys, payload))
                continue
            for event in group:
                payload = self.notifier.render_event(
                    event, plot_url=plot_urls.get(event.unique_id), run_url=run_url
                )
                messages.append(PendingMessage(event.key, (event.key,), payload))
        return messages

    def _send_outbox(self, report: DeliveryReport) -> None:
        target_down = False
        for message in self.outbox:
            if all(key in self.ledger for key in message.covers):
                self.outbox.remove(message.key)  # delivered, but the removal was interrupted
                continue
            if target_down:
                report.queued.extend(message.covers)
                continue
            error = self._attempt(message)
            if error is None:
                self.ledger.add([*message.covers, message.key])
                self.outbox.remove(message.key)
                report.sent.extend(message.covers)
                report.messages_sent += 1
                continue
            message.last_error = str(error)
            self.outbox.save()
            report.queued.extend(message.covers)
            report.errors.append(f"{message.key}: {error}")
            target_down = error.retryable
            log.warning(
                "alert %s not delivered to %s after %d attempt(s): %s; kept in the outbox",
                message.key,
                self.notifier.name,
                message.attempts,
                error,
            )

    def _attempt(self, message: PendingMessage) -> DeliveryError | None:
        """Try one message under the retry policy; the last error, or None once delivered."""
        attempt = 0
        while True:
            attempt += 1
            message.attempts += 1
            try:
                self.notifier.send(message.key, message.payload)
            except DeliveryError as error:
                wait = self.retry.wait(attempt, error.retry_after) if error.retryable else None
                if wait is None:
                    return error
                log.info("alert %s: %s; retry %d in %.1f s", message.key, error, attempt, wait)
                self._sleep(wait)
            else:
                log.info("alert %s delivered to %s", message.key, self.notifier.name)
                return None
