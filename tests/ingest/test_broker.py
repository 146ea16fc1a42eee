"""`python -m localflux broker`: both kinds carry QoS 1 messages; Mosquitto keeps sessions."""

from __future__ import annotations

import pytest

from tests.fixtures.mqtt import MqttBroker, MqttSubscriber, publish_all
from tests.support import wait_until


@pytest.mark.slow
def test_broker_delivers_every_qos1_message(mqtt_broker: MqttBroker) -> None:
    subscriber = MqttSubscriber(mqtt_broker, "machine/+")
    sent = [f"reading {i}".encode() for i in range(300)]
    publish_all(mqtt_broker, "machine/machine1", sent)
    assert wait_until(lambda: len(subscriber.payloads) >= len(sent), 10)
    assert subscriber.payloads == sent
    subscriber.close()
    assert mqtt_broker.url == f"tcp://127.0.0.1:{mqtt_broker.port}"


@pytest.mark.slow
def test_mosquitto_keeps_queued_messages_across_a_restart(mqtt_broker_factory) -> None:
    broker = mqtt_broker_factory("mosquitto", persistence=True)
    subscriber = MqttSubscriber(broker, "machine/+", client_id="persistent-reader")
    subscriber.close()  # away: the broker queues QoS 1 messages for the session
    sent = [f"queued {i}".encode() for i in range(50)]
    publish_all(broker, "machine/machine2", sent)
    broker.restart()
    back = MqttSubscriber(broker, "machine/+", client_id="persistent-reader")
    assert wait_until(lambda: len(back.payloads) >= len(sent), 10)
    assert back.payloads == sent
    back.close()
