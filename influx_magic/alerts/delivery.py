"""Deliver alert events exactly once from our side: ledger, outbox, retries, digests.

One `AlertDelivery.run(events)` per pipeline run:

1. Events whose idempotency key (`<episode_id>:opened`, `<episode_id>:recurring:<n>`,
   `<episode_id>:resolved`) is in the ledger were
   delivered by an earlier run (a re-done run re-emits them) and are skipped; events already
   waiting in the outbox are not queued twice.
2. The rest are rendered — one message each, in order, or one digest per kind when more than
   `digest_min` machines had events of that kind in this run — and written to the outbox
   *before* any is sent, so a crash mid-run loses nothing.
3. The outbox is sent oldest first, so the previous run's leftovers go out before new alerts.
   Each message is tried with exponential backoff, waiting as long as a 429's `Retry-After`
   asks (up to `RetryPolicy.max_retry_after`). After each success its keys go into the ledger
   at once and it leaves the outbox.
4. When a message fails for a reason that may pass (HTTP 5xx/429, timeout, refused), the
   target is taken to be down for this run: the remaining messages stay in the outbox without
   being tried, and the next run starts with them. A message the target rejects outright
   (e.g. 400, 404) stays in the outbox too, with the error recorded, and the others are still
   tried. A target that is not configured (no webhook URL) is down for good: every message
   waits in the outbox, in order, until a run has a target.
5. A message sent more than `late_after` seconds after the event it announces happened (data
   time) is marked late: the target's format says when it happened and that it waited.

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

from influx_magic.alerts.events import KINDS, Alert
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
    late: list[str] = field(default_factory=list)
    messages_sent: int = 0
    outbox_left: int = 0
    errors: list[str] = field(default_factory=list)
    not_configured: str | None = None  # why nothing could be sent (no target configured)
    withheld: str | None = None  # why the events were not even queued (an experiment)

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
        late_after: float | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.notifier = notifier
        folder = Path(state_dir) / "alerts" / notifier.name
        self.ledger = Ledger(folder / "ledger.json")
        self.outbox = Outbox(folder / "outbox.json")
        self.digest_min = digest_min
        self.late_after = late_after
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock

    def run(
        self,
        events: Iterable[Alert],
        *,
        plot_urls: Mapping[str, str] | None = None,
        run_url: str | None = None,
    ) -> DeliveryReport:
        """Queue `events` and send the whole outbox.

        `plot_urls` maps an event's key to the public URL of its plot; `run_url` links the
        Mage run (omit it for `mage run`, which has no run page).
        """
        report = DeliveryReport()
        fresh = self._fresh(events, report)
        self.outbox.add(self._render(fresh, plot_urls or {}, run_url))
        self._send_outbox(report)
        report.outbox_left = len(self.outbox)
        return report

    def plotted(self, events: Iterable[Alert]) -> list[Alert]:
        """The events whose message links a plot: each event that gets a message of its own,
        and the first `digest_min` machines listed in a digest (their lines link a plot, the
        rest do not). So a fleet-wide incident costs `digest_min` plots per kind of event,
        not one per machine. Events delivered or queued before have their message already.

        >>> import tempfile
        >>> from fleetwatch.episodes import Episode, EpisodeEvent
        >>> from influx_magic.alerts.outputs.slack_webhook import SlackWebhookNotifier
        >>> delivery = AlertDelivery(SlackWebhookNotifier(None), tempfile.mkdtemp(), digest_min=3)
        >>> def opened(n): return [Alert(EpisodeEvent("opened", 0, Episode(f"m{i}", f"e{i}",
        ...     0, 0, 0.9, 0, {}, {}, [])), f"m{i}") for i in range(n)]
        >>> len(delivery.plotted(opened(3))), len(delivery.plotted(opened(4000)))
        (3, 3)
        """
        fresh = self._fresh(events, DeliveryReport())
        digests = self._digest_kinds(fresh)
        listed: dict[str, set[str]] = {kind: set() for kind in digests}
        chosen = []
        for event in fresh:
            machines = listed.get(event.kind)
            if machines is not None:
                if len(machines) >= self.digest_min and event.unique_id not in machines:
                    continue
                machines.add(event.unique_id)
            chosen.append(event)
        return chosen

    def _fresh(self, events: Iterable[Alert], report: DeliveryReport) -> list[Alert]:
        pending = self.outbox.covered_keys()
        fresh: dict[str, Alert] = {}
        for event in events:
            if event.key in self.ledger:
                report.already_delivered.append(event.key)
            elif event.key not in pending:
                fresh.setdefault(event.key, event)
        return list(fresh.values())

    def _digest_kinds(self, events: list[Alert]) -> set[str]:
        """The kinds of event that more than `digest_min` machines had: one digest each."""
        return {
            kind
            for kind in KINDS
            if len({e.unique_id for e in events if e.kind == kind}) > self.digest_min
        }

    def _render(
        self, events: list[Alert], plot_urls: Mapping[str, str], run_url: str | None
    ) -> list[PendingMessage]:
        """One message per event, in the events' order, except that the events of a kind
        that more than `digest_min` machines had in this run share one digest (placed where
        the first of them was)."""
        digests = self._digest_kinds(events)
        messages = []
        for event in events:
            if event.kind not in digests:
                payload = self.notifier.render_event(
                    event, plot_url=plot_urls.get(event.key), run_url=run_url
                )
                happened = event.time.timestamp()
                messages.append(PendingMessage(event.key, (event.key,), payload, happened))
            elif event is next(e for e in events if e.kind == event.kind):
                group = [e for e in events if e.kind == event.kind]
                keys = tuple(e.key for e in group)
                digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
                payload = self.notifier.render_digest(group, plot_urls=plot_urls, run_url=run_url)
                happened = min(e.time for e in group).timestamp()
                key = f"digest:{event.kind}:{digest}"
                messages.append(PendingMessage(key, keys, payload, happened))
        return messages

    def _send_outbox(self, report: DeliveryReport) -> None:
        if not self.notifier.configured:
            report.not_configured = self.notifier.not_configured
        target_down = not self.notifier.configured
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
                if self._late_by(message) is not None:
                    report.late.extend(message.covers)
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

    def _late_by(self, message: PendingMessage) -> float | None:
        """Seconds since the announced event happened, when that makes the message late."""
        if self.late_after is None or message.happened_at is None:
            return None
        age = self._clock() - message.happened_at
        return age if age > self.late_after else None

    def _attempt(self, message: PendingMessage) -> DeliveryError | None:
        """Try one message under the retry policy; the last error, or None once delivered."""
        payload = message.payload
        late_by = self._late_by(message)
        if late_by is not None:
            payload = self.notifier.render_late(payload, late_by)
        attempt = 0
        while True:
            attempt += 1
            message.attempts += 1
            try:
                self.notifier.send(message.key, payload)
            except DeliveryError as error:
                wait = self.retry.wait(attempt, error.retry_after) if error.retryable else None
                if wait is None:
                    return error
                log.info("alert %s: %s; retry %d in %.1f s", message.key, error, attempt, wait)
                self._sleep(wait)
            else:
                log.info("alert %s delivered to %s", message.key, self.notifier.name)
                return None
