"""BufferedPublisher against real brokers: QoS 1 in order, outages buffered, oldest dropped."""

from __future__ import annotations

import pytest

from machine_simulator.publisher import BufferedPublisher
from tests.fixtures.mqtt import MqttBroker, MqttSubscriber
from tests.support import wait_until


def make_publisher(broker: MqttBroker, **kwargs) -> BufferedPublisher:
    publisher = BufferedPublisher(broker.url, reconnect_delay=(0.2, 1), **kwargs)
    publisher.start()
    return publisher


@pytest.mark.slow
def test_every_message_arrives_once_in_order(mqtt_broker: MqttBroker) -> None:
    subscriber = MqttSubscriber(mqtt_broker, "machine/+")
    publisher = make_publisher(mqtt_broker)
    sent = [f"m{i}".encode() for i in range(500)]
    for payload in sent:
        publisher.publish("machine/machine1", payload)
    assert wait_until(lambda: len(subscriber.payloads) >= len(sent), 20)
    stats = publisher.stop()
    assert subscriber.payloads == sent
    assert (stats.sent, stats.acked, stats.dropped, stats.queued) == (500, 500, 0, 0)
    subscriber.close()


@pytest.fixture
def persistent_broker(mqtt_broker_factory) -> MqttBroker:
    """Mosquitto with persistence: a persistent subscriber misses nothing while it restarts."""
    return mqtt_broker_factory("mosquitto", persistence=True)


@pytest.mark.slow
def test_broker_outage_is_buffered_and_sent_after_reconnect(persistent_broker) -> None:
    subscriber = MqttSubscriber(persistent_broker, "machine/+", client_id="observer")
    publisher = make_publisher(persistent_broker)
    publisher.publish("machine/machine1", b"before")
    assert wait_until(lambda: publisher.stats().acked == 1, 10)
    persistent_broker.stop()
    assert wait_until(lambda: not publisher.stats().connected, 10)
    during = [f"during {i}".encode() for i in range(100)]
    for payload in during:
        publisher.publish("machine/machine1", payload)
    assert publisher.stats().queued == 100
    persistent_broker.start()
    assert wait_until(lambda: len(subscriber.payloads) >= 101, 20)
    assert subscriber.payloads == [b"before", *during]
    assert publisher.stop().dropped == 0
    subscriber.close()


@pytest.mark.slow
def test_a_broker_that_is_not_up_yet_is_retried(persistent_broker) -> None:
    subscriber = MqttSubscriber(persistent_broker, "machine/+", client_id="observer")
    persistent_broker.stop()
    publisher = make_publisher(persistent_broker)
    publisher.publish("machine/machine2", b"first")
    assert not publisher.stats().connected
    persistent_broker.start()
    assert wait_until(lambda: subscriber.payloads == [b"first"], 20)
    publisher.stop()
    subscriber.close()


@pytest.mark.slow
def test_a_full_outbox_drops_the_oldest_and_counts_them(persistent_broker) -> None:
    subscriber = MqttSubscriber(persistent_broker, "machine/+", client_id="observer")
    persistent_broker.stop()
    publisher = make_publisher(persistent_broker, buffer_limit=10)
    sent = [f"r{i}".encode() for i in range(25)]
    for payload in sent:
        publisher.publish("machine/machine3", payload)
    assert (publisher.stats().queued, publisher.stats().dropped) == (10, 15)
    assert publisher.publish("machine/machine3", b"late", block=True, timeout=0.2) is False
    persistent_broker.start()
    assert publisher.publish("machine/machine3", b"late", block=True, timeout=20) is True
    assert wait_until(lambda: len(subscriber.payloads) >= 11, 20)
    assert subscriber.payloads == [*sent[15:], b"late"]
    publisher.stop()
    subscriber.close()
