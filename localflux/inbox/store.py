"""What the local inbox keeps: Slack webhook bodies, checked as Slack checks them, on disk.

The inbox stands in for a Slack channel, and a channel keeps its history: a restart of
`make run` must not lose the alerts nobody has looked at yet. Messages are appended to a JSONL
file (one JSON object per line) and fsynced, so a crash can at worst tear the line being
written; that line is reported and skipped on the next start, and every other message loads.

Bodies are accepted the way Slack's incoming webhooks accept them, so a sender that works here
works against Slack: a JSON object (whatever the Content-Type header says; Mage's own failure
notices carry none) or a form field `payload=<json>`, with `text`, `blocks` or `attachments`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

# Slack answers 413 well below this; a plot is linked, never embedded, so alerts stay small.
MAX_BODY_BYTES = 1_000_000
MESSAGES_FILE = "messages.jsonl"


class InvalidMessage(ValueError):
    """A body Slack would refuse with HTTP 400; the text starts with Slack's error code."""


def parse_slack_body(body: bytes, content_type: str | None = None) -> dict[str, Any]:
    """The Slack message in a webhook request body, or InvalidMessage saying what is wrong.

    >>> parse_slack_body(b'{"text": "Anomaly on machine2"}')
    {'text': 'Anomaly on machine2'}
    >>> parse_slack_body(b'payload=%7B%22text%22%3A%22hi%22%7D', "application/x-www-form-urlencoded")
    {'text': 'hi'}
    >>> parse_slack_body(b'{"text": "hi"}', "application/x-www-form-urlencoded")  # curl -d
    {'text': 'hi'}
    >>> parse_slack_body(b"hello")
    Traceback (most recent call last):
    ...
    localflux.inbox.store.InvalidMessage: invalid_payload: the body is not JSON (Expecting value: line 1 column 1 (char 0))
    >>> parse_slack_body(b'{"username": "bot"}')
    Traceback (most recent call last):
    ...
    localflux.inbox.store.InvalidMessage: no_text: a message needs `text`, `blocks` or `attachments`
    """
    try:
        raw = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidMessage(f"invalid_payload: the body is not UTF-8 ({error})") from None
    if (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        form = parse_qs(raw, keep_blank_values=True)
        if "payload" in form:
            raw = form["payload"][0]
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidMessage(f"invalid_payload: the body is not JSON ({error})") from None
    except RecursionError:
        raise InvalidMessage("invalid_payload: the JSON is nested too deeply") from None
    if not isinstance(payload, dict):
        kind = type(payload).__name__
        raise InvalidMessage(f"invalid_payload: expected a JSON object, got {kind}")
    if not any(payload.get(key) for key in ("text", "blocks", "attachments")):
        raise InvalidMessage("no_text: a message needs `text`, `blocks` or `attachments`")
    return payload


def fallback_text(payload: Mapping[str, Any]) -> str:
    """The message's `text`, else the text of its blocks: what a notification would show.

    Slack uses `text` as the notification line; Mage's failure notices have only blocks, and
    the inbox's list and API should still say something readable for them.

    >>> fallback_text({"text": "Resolved: machine2"})
    'Resolved: machine2'
    >>> fallback_text({"blocks": [
    ...     {"type": "header", "text": {"type": "plain_text", "text": "Mage Notification"}},
    ...     {"type": "divider"},
    ...     {"type": "section", "text": {"type": "mrkdwn", "text": "Failed to run"}}]})
    'Mage Notification\\nFailed to run'
    """
    text = payload.get("text")
    if isinstance(text, str) and text.strip():
        return text
    lines: list[str] = []
    for block in _as_list(payload.get("blocks")):
        if isinstance(block, Mapping):
            lines.extend(_block_texts(block))
    for attachment in _as_list(payload.get("attachments")):
        if isinstance(attachment, Mapping):
            lines.extend(
                str(attachment[key])
                for key in ("pretext", "title", "text", "fallback")
                if isinstance(attachment.get(key), str) and attachment[key]
            )
    return "\n".join(line for line in lines if line.strip())


def _block_texts(block: Mapping[str, Any]) -> list[str]:
    texts = [_text_of(block.get("text"))]
    texts += [_text_of(field) for field in _as_list(block.get("fields"))]
    if block.get("type") == "context":
        texts += [_text_of(element) for element in _as_list(block.get("elements"))]
    return [text for text in texts if text]


def _text_of(obj: object) -> str:
    if isinstance(obj, Mapping) and isinstance(obj.get("text"), str):
        return obj["text"]
    return ""


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class InboxMessage:
    """One received webhook call, in the shape `GET /api/messages` returns."""

    received_at: str
    idempotency_key: str | None
    text: str
    payload: dict[str, Any]

    @classmethod
    def received(cls, payload: dict[str, Any], idempotency_key: str | None) -> InboxMessage:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        return cls(now, idempotency_key or None, fallback_text(payload), payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "received_at": self.received_at,
            "idempotency_key": self.idempotency_key,
            "text": self.text,
            "payload": self.payload,
        }


class InboxStore:
    """Messages in arrival order, mirrored in `<data_dir>/messages.jsonl`; thread-safe."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / MESSAGES_FILE
        self._lock = threading.Lock()
        self._messages = self._load()

    def _load(self) -> list[InboxMessage]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        messages = []
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                messages.append(
                    InboxMessage(
                        received_at=str(record["received_at"]),
                        idempotency_key=record.get("idempotency_key"),
                        text=str(record.get("text", "")),
                        payload=dict(record["payload"]),
                    )
                )
            except (ValueError, KeyError, TypeError) as error:
                log.warning("%s line %d is not a message, skipped: %s", self.path, number, error)
        if data and not data.endswith(b"\n"):
            # A torn last line: start the next record on a line of its own.
            with self.path.open("ab") as file:
                file.write(b"\n")
        return messages

    def add(self, message: InboxMessage) -> None:
        """Append and fsync before returning, so a 200 answer means the message is on disk."""
        line = json.dumps(message.to_json(), ensure_ascii=False) + "\n"
        with self._lock:
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
            self._messages.append(message)

    def all(self) -> list[InboxMessage]:
        """Every message, oldest first."""
        with self._lock:
            return list(self._messages)

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)
