"""`python -m localflux broker`: both kinds carry QoS 1 messages; Mosquitto keeps sessions."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from tests.fixtures.mqtt import MqttBroker
from tests.support import wait_until


class Subscriber:
    """A paho subscriber that records payloads; persistent when given a client id."""

    def __init__(self, broker: MqttBroker, topic: str, client_id: str = "") -> None:
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not client_id,
        )
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"

    def _on_message(self, _client: mqtt.Client, _userdata: object, message) -> None:
        with self._lock:
            self.payloads.append(message.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(broker: MqttBroker, topic: str, payloads: list[bytes]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    infos = [client.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


@pytest.mark.slow
def test_broker_delivers_every_qos1_message(mqtt_broker: MqttBroker) -> None:
    subscriber = Subscriber(mqtt_broker, "machine/+")
    sent = [f"reading {i}".encode() for i in range(300)]
    publish(mqtt_broker, "machine/machine1", sent)
    assert wait_until(lambda: len(subscriber.payloads) >= len(sent), 10)
    assert subscriber.payloads == sent
    subscriber.close()
    assert mqtt_broker.url == f"tcp://127.0.0.1:{mqtt_broker.port}"


@pytest.mark.slow
def test_mosquitto_keeps_queued_messages_across_a_restart(mqtt_broker_factory) -> None:
    broker = mqtt_broker_factory("mosquitto", persistence=True)
    subscriber = Subscriber(broker, "machine/+", client_id="persistent-reader")
    subscriber.close()  # away: the broker queues QoS 1 messages for the session
    sent = [f"queued {i}".encode() for i in range(50)]
    publish(broker, "machine/machine2", sent)
    broker.restart()
    back = Subscriber(broker, "machine/+", client_id="persistent-reader")
    assert wait_until(lambda: len(back.payloads) >= len(sent), 10)
    assert back.payloads == sent
    back.close()
