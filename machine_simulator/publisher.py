"""A QoS 1 MQTT publisher that survives broker outages with a bounded outbox.

paho-mqtt runs its network loop in a background thread and reconnects with exponential backoff
(also when the broker is not up yet at start). Messages wait in our own outbox until the client
is connected, and at most `inflight` of them are handed to paho at a time: paho retransmits
those after a reconnect, while the outbox decides what is lost when an outage outlasts it -
the oldest readings, counted in `dropped`, because the newest matter most to a live detector.
A backfill instead waits for room (`publish(..., block=True)`), so history is never dropped.

Broker URLs: `tcp://host:port` or `mqtt://host:port` (port defaults to 1883).

>>> parse_broker_url("mqtt://127.0.0.1:1884")
('127.0.0.1', 1884)
>>> parse_broker_url("tcp://broker")
('broker', 1883)
>>> parse_broker_url("ws://broker:80")
Traceback (most recent call last):
...
ValueError: unsupported MQTT broker URL 'ws://broker:80': use tcp://host:port or mqtt://host:port
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

log = logging.getLogger("machine_simulator.publisher")


def parse_broker_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("tcp", "mqtt") or not parts.hostname:
        raise ValueError(
            f"unsupported MQTT broker URL {url!r}: use tcp://host:port or mqtt://host:port"
        )
    return parts.hostname, parts.port or 1883


@dataclass(frozen=True)
class PublisherStats:
    """Counters since start. `sent` were handed to the client, `acked` confirmed by the broker."""

    connected: bool
    queued: int
    sent: int
    acked: int
    dropped: int

    def to_json(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "queued": self.queued,
            "sent": self.sent,
            "acked": self.acked,
            "dropped": self.dropped,
        }


class BufferedPublisher:
    """Publishes (topic, payload) pairs at QoS 1 in order, through outages, from any thread."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str = "",
        buffer_limit: int = 100_000,
        inflight: int = 100,
        qos: int = 1,
        reconnect_delay: tuple[int, int] = (1, 30),
    ) -> None:
        if buffer_limit < 1:
            raise ValueError("buffer_limit must be at least 1")
        self.host, self.port = parse_broker_url(url)
        self.url = url
        self.qos = qos
        self.buffer_limit = buffer_limit
        self.inflight = inflight
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._cond = threading.Condition()
        self._connected = False
        self._running = False
        self._sent = 0
        self._acked = 0
        self._dropped = 0
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
        )
        self._client.max_inflight_messages_set(inflight)
        self._client.reconnect_delay_set(*reconnect_delay)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)

    def start(self) -> None:
        """Connect in the background (retrying until the broker is up) and start sending."""
        self._running = True
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self._sender.start()

    def stop(self, drain_timeout: float = 5.0) -> PublisherStats:
        """Send what is queued (up to `drain_timeout` s while connected), then disconnect."""
        deadline = time.monotonic() + drain_timeout
        with self._cond:
            while (
                self._connected
                and (self._outbox or self._acked < self._sent)
                and time.monotonic() < deadline
            ):
                self._cond.wait(0.05)
            self._running = False
            self._cond.notify_all()
        self._sender.join(timeout=2)
        connected = self._connected
        self._client.disconnect()
        if connected:
            self._client.loop_stop()
        # Else paho's thread may sit in a reconnect backoff for a second; it is a daemon thread
        # that exits on its own, and waiting for it would only slow down every shutdown.
        return self.stats()

    def publish(
        self, topic: str, payload: bytes, *, block: bool = False, timeout: float | None = None
    ) -> bool:
        """Queue a message. When the outbox is full, drop the oldest one, or with `block`
        wait for room (False when `timeout` passes first)."""
        with self._cond:
            if block:
                ready = self._cond.wait_for(
                    lambda: len(self._outbox) < self.buffer_limit or not self._running, timeout
                )
                if not ready:
                    return False
            elif len(self._outbox) >= self.buffer_limit:
                self._outbox.popleft()
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning(
                        "outbox full (%d): dropped %d oldest messages so far",
                        self.buffer_limit,
                        self._dropped,
                    )
            self._outbox.append((topic, payload))
            self._cond.notify_all()
        return True

    def has_room(self, n: int = 1) -> bool:
        with self._cond:
            return len(self._outbox) + n <= self.buffer_limit

    def stats(self) -> PublisherStats:
        with self._cond:
            return PublisherStats(
                self._connected, len(self._outbox), self._sent, self._acked, self._dropped
            )

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        not self._running
                        or (
                            self._connected
                            and self._outbox
                            and self._sent - self._acked < self.inflight
                        )
                    )
                )
                if not self._running:
                    return
                topic, payload = self._outbox.popleft()
                self._sent += 1
                self._cond.notify_all()
            # Outside the lock: paho may call on_publish from its thread while we are in here.
            # If the connection dropped meanwhile, paho keeps the QoS 1 message and resends it.
            self._client.publish(topic, payload, qos=self.qos)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self.url, reason_code)
            return
        log.info("connected to %s", self.url)
        with self._cond:
            self._connected = True
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            was_connected, self._connected = self._connected, False
        if was_connected and self._running:
            log.warning("lost the broker %s (%s); buffering, reconnecting", self.url, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()
