"""Alert outputs: one module per target, each a `Notifier`, in the manner of Telegraf's outputs.

An output knows two things only: how to render events in its target's format, and how to make
one delivery attempt. Everything else — retries and backoff, the ledger that makes delivery
exactly-once, the outbox that survives a dead target, digests — lives in
`influx_magic.alerts.delivery` and is shared by all outputs.

To add a target (say Microsoft Teams), add `outputs/teams_webhook.py` with a class that has
`name`, `configured`, `not_configured`, `render_event`, `render_digest`, `render_late` and
`send`, document its settings in the module docstring like `slack_webhook.py` does, and pass an
instance to `AlertDelivery`. Its ledger and
outbox live under `<state dir>/alerts/<name>/`, so adding a target later does not mark past
alerts as delivered to it, nor re-send them to the old one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from influx_magic.alerts.events import Alert


class DeliveryError(Exception):
    """One failed delivery attempt. Its text never contains the target's secret URL.

    `retryable` is true for failures that may pass on their own (timeouts, refused connections,
    HTTP 408/429/5xx); `retry_after` is the wait the target asked for, in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class Notifier(Protocol):
    """An alert target. `name` names its ledger/outbox folder, so keep it stable. A target
    that is not `configured` (no URL) still renders: its messages wait in the outbox."""

    name: str

    @property
    def configured(self) -> bool:
        """Whether messages can be sent at all."""
        ...

    @property
    def not_configured(self) -> str:
        """Why not, naming the setting to fill in."""
        ...

    def render_event(
        self, event: Alert, *, plot_url: str | None, run_url: str | None
    ) -> dict[str, Any]:
        """The JSON body announcing one episode opening or resolving."""
        ...

    def render_digest(
        self,
        events: Sequence[Alert],
        *,
        plot_urls: Mapping[str, str],
        run_url: str | None,
    ) -> dict[str, Any]:
        """One JSON body for many events of the same kind."""
        ...

    def render_late(self, payload: Mapping[str, Any], late_by: float) -> dict[str, Any]:
        """`payload` marked as arriving `late_by` seconds after what it announces happened."""
        ...

    def send(self, key: str, payload: Mapping[str, Any]) -> None:
        """One delivery attempt of a rendered body; raises `DeliveryError` when it failed."""
        ...
