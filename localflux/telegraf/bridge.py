"""`python -m localflux bridge`: the local stand-in for Telegraf (MQTT -> json_v2 -> InfluxDB).

It reads the same `telegraf/telegraf.conf` as the Docker stack's Telegraf (see
`localflux.telegraf.config` for the options it implements; the rest are listed at start) and behaves
like Telegraf where it matters for not losing data:

- it subscribes with the configured QoS and, with `persistent_session`, a fixed client id and a
  session the broker keeps while the bridge is away, reconnecting with backoff;
- a message is acknowledged to the broker only once its point is written (Telegraf's
  "tracking"), so a bridge that dies loses nothing the broker still holds;
- points are written in batches of `metric_batch_size`, at least every `flush_interval`
  (+ `flush_jitter`); while InfluxDB is unreachable the batch is retried with backoff and new
  points wait in a buffer of `metric_buffer_limit` (beyond it the oldest are dropped, counted);
- a malformed message (not JSON, a missing path, a non-numeric value, too large) is counted,
  logged with its topic and reason, acknowledged and skipped; it never stops ingest.

Retries can write a point twice; InfluxDB keeps one row per series and timestamp, so the
table holds each reading once.
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from localflux.telegraf.config import BridgeConfig, ConfigError, load_config
from localflux.telegraf.json_v2 import PayloadError, parse_payload
from localflux.telegraf.metric import EncodeError, to_line
from localflux.telegraf.output import BatchResult, InfluxV2Writer, WriteUnavailable

log = logging.getLogger("localflux.telegraf.bridge")

DEFAULT_MAX_PAYLOAD = 256 * 1024
# How long a stopping bridge keeps trying to write what it holds.
SHUTDOWN_GRACE = 5.0


@dataclass
class _Entry:
    """A line waiting to be written, and the broker message to acknowledge once it is."""

    line: str
    ack: tuple[int, int] | None  # (connection generation, message id)


@dataclass
class BridgeStats:
    received: int = 0
    written: int = 0
    malformed: int = 0
    rejected: int = 0
    dropped: int = 0
    write_failures: int = 0

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in vars(self).items())


class Bridge:
    def __init__(
        self,
        config: BridgeConfig,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_retry_delay: float = 5.0,
    ) -> None:
        self.config = config
        self.max_payload = max_payload
        self.max_retry_delay = max_retry_delay
        self.writer = InfluxV2Writer(config.output)
        self.stats = BridgeStats()
        self.host_tag = (
            None if config.agent.omit_hostname else config.agent.hostname or socket.gethostname()
        )
        self._buffer: collections.deque[_Entry] = collections.deque()
        self._cond = threading.Condition()
        self._generation = 0
        self._accepting = True
        self._stopping = False
        mqtt_input = config.input
        self.qos = mqtt_input.qos
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=mqtt_input.client_id,
            clean_session=not mqtt_input.persistent_session,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if mqtt_input.username:
            self.client.username_pw_set(mqtt_input.username, mqtt_input.password or None)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._flusher = threading.Thread(target=self._flush_loop, name="bridge-flush")

    # --- MQTT side (paho's network thread) ---

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        with self._cond:
            # Acks for messages of an earlier connection are meaningless now: the broker
            # redelivers those, and a stale id could acknowledge a different message.
            self._generation += 1
        resumed = " (session resumed)" if flags.session_present else ""
        log.info("connected to %s%s", self.server, resumed)
        client.subscribe([(topic, self.qos) for topic in self.config.input.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error("the broker refused a subscription: %s", reason_codes)
            return
        log.info("subscribed to %s", ", ".join(self.config.input.topics))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._stopping:
            log.warning("lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            if not self._accepting:
                return  # shutting down: not acknowledged, so the broker keeps it
            ack = (self._generation, message.mid) if message.qos > 0 else None
        self.stats.received += 1
        try:
            lines = self._lines(message.topic, message.payload)
        except (PayloadError, EncodeError) as exc:
            self.stats.malformed += 1
            log.warning(
                "skipped malformed message on %s (%d so far): %s",
                message.topic,
                self.stats.malformed,
                exc,
            )
            self._ack([ack])
            return
        with self._cond:
            for i, line in enumerate(lines):
                self._buffer.append(_Entry(line, ack if i == len(lines) - 1 else None))
            overflow = len(self._buffer) - self.config.agent.metric_buffer_limit
            dropped = [self._buffer.popleft() for _ in range(max(0, overflow))]
            self._cond.notify_all()
        if dropped:
            self.stats.dropped += len(dropped)
            log.warning(
                "buffer full (%d points): dropped the oldest, %d so far",
                self.config.agent.metric_buffer_limit,
                self.stats.dropped,
            )
            self._ack([e.ack for e in dropped])

    def _lines(self, topic: str, payload: bytes) -> list[str]:
        if len(payload) > self.max_payload:
            raise PayloadError(f"{len(payload)} bytes is over the {self.max_payload} byte limit")
        lines = []
        for metric in parse_payload(payload, self.config.input.json_v2):
            if self.config.input.topic_tag:
                metric.tags[self.config.input.topic_tag] = topic
            if self.host_tag:
                metric.tags["host"] = self.host_tag
            lines.append(to_line(metric))
        return lines

    def _ack(self, acks: list[tuple[int, int] | None]) -> None:
        with self._cond:
            generation = self._generation
        for ack in acks:
            if ack is not None and ack[0] == generation:
                self.client.ack(ack[1], self.qos)

    # --- InfluxDB side (the flush thread) ---

    def _next_batch(self) -> list[_Entry] | None:
        """Wait for a full batch or the flush interval; None once stopping with nothing left."""
        agent = self.config.agent
        deadline = time.monotonic() + agent.flush_interval + random.uniform(0, agent.flush_jitter)
        with self._cond:
            while True:
                if len(self._buffer) >= agent.metric_batch_size:
                    break
                if self._stopping or time.monotonic() >= deadline:
                    if self._buffer:
                        break
                    if self._stopping:
                        return None
                    deadline = time.monotonic() + agent.flush_interval
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            count = min(agent.metric_batch_size, len(self._buffer))
            return [self._buffer.popleft() for _ in range(count)]

    def _write_with_retry(self, batch: list[_Entry]) -> BatchResult | None:
        """Write until InfluxDB takes the batch; None if it still cannot when shutting down."""
        delay, give_up_at = 0.0, None
        while True:
            try:
                return self.writer.write_batch([e.line for e in batch])
            except WriteUnavailable as exc:
                self.stats.write_failures += 1
                delay = min(self.max_retry_delay, max(0.5, delay * 2))
                log.warning(
                    "write failed, %d points kept, retry in %.1fs: %s", len(batch), delay, exc
                )
                if self._stopping:
                    give_up_at = give_up_at or time.monotonic() + SHUTDOWN_GRACE
                    if time.monotonic() + delay > give_up_at:
                        return None
                time.sleep(delay)

    def _flush_loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            result = self._write_with_retry(batch)
            if result is None:
                with self._cond:
                    left = len(batch) + len(self._buffer)
                log.error(
                    "InfluxDB still unreachable at shutdown: %d points not written; the broker "
                    "redelivers the unacknowledged messages to the next bridge",
                    left,
                )
                return
            self.stats.written += result.written
            for line, reason in result.rejected:
                self.stats.rejected += 1
                log.warning(
                    "InfluxDB rejected a point (%d so far): %s; line: %s",
                    self.stats.rejected,
                    reason,
                    line[:200],
                )
            self._ack([e.ack for e in batch])
            log.debug("wrote %d points", result.written)

    # --- lifecycle ---

    @property
    def server(self) -> str:
        return self.config.input.servers[0]

    def start(self) -> None:
        parts = urlsplit(self.server)
        self.client.connect_async(
            parts.hostname or "127.0.0.1", parts.port or 1883, self.config.input.keepalive
        )
        self.client.loop_start()
        self._flusher.start()

    def stop(self) -> None:
        """Stop taking messages, write what is buffered (acknowledging it), disconnect."""
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
        self._flusher.join()
        self.client.disconnect()
        self.client.loop_stop()
        log.info("stopped: %s", self.stats.summary())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=Path("telegraf/telegraf.conf"), help="a telegraf.conf"
    )
    parser.add_argument(
        "--max-payload-bytes",
        type=int,
        default=DEFAULT_MAX_PAYLOAD,
        help="larger messages are skipped as malformed",
    )
    parser.add_argument(
        "--max-retry-delay",
        type=float,
        default=5.0,
        help="longest wait between write attempts while InfluxDB is unreachable (seconds)",
    )
    parser.add_argument(
        "--stats-interval", type=float, default=60.0, help="seconds between progress lines"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("%s: %s", args.config, exc)
        return 2
    for option in config.unsupported:
        log.warning("%s: %s is not supported by the bridge; ignored", args.config, option)
    for note in config.notes:
        log.warning("%s: %s", args.config, note)
    bridge = Bridge(
        config, max_payload=args.max_payload_bytes, max_retry_delay=args.max_retry_delay
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info(
        "%s %s -> %s (bucket %s), batches of %d every %gs",
        bridge.server,
        ",".join(config.input.topics),
        config.output.urls[0],
        config.output.bucket,
        config.agent.metric_batch_size,
        config.agent.flush_interval,
    )
    bridge.start()
    while not stop.wait(args.stats_interval):
        log.info("progress: %s", bridge.stats.summary())
    bridge.stop()
    return 0
