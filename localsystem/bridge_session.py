"""Open the bridge's persistent MQTT session before the simulator publishes (`make run`, and
the Docker stack's `telegraf-session` for Telegraf).

`make run` starts the broker, the bridge and the simulator at the same moment. A broker passes
a message only to the sessions subscribed when it arrives, so whatever the simulator publishes
before the bridge has subscribed is gone; on a first run that is the backfill, which the
simulator publishes within seconds of starting and which gives the detector its first window.

The bridge, like Telegraf, uses a persistent session with a fixed client id (`client_id` and
`persistent_session` in telegraf.conf). Connecting once with that id, subscribing to the same
topics at the same QoS and disconnecting makes the broker queue every later message for the
bridge, whichever of the two connects first. The simulator's command runs this first:

    python -m localsystem.bridge_session --config telegraf/telegraf.conf && exec python -m ...

If the bridge is already connected, the broker hands the session over to us and back: the
bridge logs a lost connection, reconnects within a second and receives what is queued, and
what it had not acknowledged yet (written twice at most; InfluxDB keeps one row per series and
time).

The Docker stack runs this once before Telegraf starts (Telegraf then finds the session with its
subscription and skips subscribing), so Telegraf's "connected" healthcheck means "subscribed"
and the simulator, which waits for that healthcheck, never publishes into no session.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from localflux.telegraf.config import ConfigError, MqttInput, load_config

log = logging.getLogger("localsystem.bridge_session")


class SubscriptionRefused(RuntimeError):
    """The broker took the session but not its subscription at the asked QoS."""


def open_session(mqtt_input: MqttInput, timeout: float) -> None:
    """Connect as the bridge, subscribe to its topics, disconnect; retry until `timeout`.

    Raises TimeoutError naming the broker when it does not accept the session in time, and
    SubscriptionRefused when it refuses a topic or grants a lower QoS than asked.
    """
    server = mqtt_input.servers[0]
    parts = urlsplit(server)
    deadline = time.monotonic() + timeout
    subscribed: list[bool] = []
    refusals: list[str] = []
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=mqtt_input.client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    if mqtt_input.username:
        client.username_pw_set(mqtt_input.username, mqtt_input.password or None)

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("%s refused the bridge's session: %s", server, reason_code)
            return
        client.subscribe([(topic, mqtt_input.qos) for topic in mqtt_input.topics])

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        # MQTT 3.1.1 answers each topic with its granted QoS, or 0x80 for a refusal; a lower QoS
        # than asked would not queue the readings for the bridge while it is away.
        granted = [code.value for code in reason_codes]
        if any(code.is_failure for code in reason_codes) or min(granted) < mqtt_input.qos:
            refusals.append(f"granted {granted} for {list(mqtt_input.topics)}")
        subscribed.append(True)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    while not subscribed:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the broker at {server} did not take a session within {timeout:g}s")
        try:
            client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=10)
        except OSError:
            time.sleep(0.2)  # the broker is still starting
            continue
        while not subscribed and time.monotonic() < deadline:
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                time.sleep(0.2)  # refused or dropped: connect again
                break
    client.disconnect()
    if refusals:
        raise SubscriptionRefused(f"the broker at {server} refused the subscription: {refusals[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localsystem.bridge_session", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", type=Path, required=True, help="the bridge's telegraf.conf")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the broker"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        mqtt_input = load_config(args.config).input
    except ConfigError as error:
        log.error("%s: %s", args.config, error)
        return 2
    if not (mqtt_input.persistent_session and mqtt_input.client_id):
        log.warning(
            "%s has no persistent session with a client_id: readings published before the "
            "bridge subscribes are lost",
            args.config,
        )
        return 0
    try:
        open_session(mqtt_input, args.timeout)
    except (TimeoutError, SubscriptionRefused) as error:
        log.error("%s", error)
        return 1
    log.info("session %r open on %s", mqtt_input.client_id, mqtt_input.servers[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
