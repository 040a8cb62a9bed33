"""The confirmed producer against the real broker: every record acknowledged, counted,
and a record the broker refuses raised, never dropped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from availability_kafka.delivery import POLL_EVERY, ConfirmedProducer, DeliveryFailed

pytestmark = pytest.mark.kafka


@pytest.fixture
def small_topic(brokers: str) -> Iterator[str]:
    """One partition that refuses record batches over 500 kB."""
    name = f"t-delivery-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": brokers})
    topic = NewTopic(name, 1, 1, config={"max.message.bytes": "500000"})
    for future in admin.create_topics([topic], operation_timeout=10).values():
        future.result(15)
    yield name
    for future in admin.delete_topics([name], operation_timeout=10).values():
        future.result(15)


def _end_offset(brokers: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"g-{uuid.uuid4().hex}"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def test_every_record_is_acknowledged_and_counted(brokers: str, small_topic: str) -> None:
    producer = ConfirmedProducer(brokers)
    count = 2 * POLL_EVERY + 17  # across several polls of the callbacks
    for n in range(count):
        producer.produce(small_topic, f"value {n}".encode(), f"key-{n % 50}")
    assert producer.confirm() == count
    producer.produce(small_topic, None, "key-0")  # a tombstone
    assert producer.confirm() == count + 1
    assert _end_offset(brokers, small_topic) == count + 1


def test_a_record_the_broker_refuses_is_raised(brokers: str, small_topic: str) -> None:
    producer = ConfirmedProducer(brokers, {"compression.type": "none"})
    producer.produce(small_topic, b"fits", "a")
    producer.produce(small_topic, os.urandom(700_000), "too-big")
    producer.produce(small_topic, b"fits too", "b")
    with pytest.raises(DeliveryFailed, match=r"failed delivery: .*too-big.*size too large"):
        producer.confirm()
    assert producer.delivered == 3 - len(producer.failures)  # its batch may fail with it
