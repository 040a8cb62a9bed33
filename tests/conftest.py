"""Kafka fixtures for the whole suite: one real broker, fresh topics for every test.

`make test` starts the local broker; when it is not running (plain `pytest`), the
session starts it and stops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from availability.codec import Codec
from availability.delivery import ConfirmedProducer
from availability.topics import TopicNames, create_topics
from dataflows.domain.events import InventoryEvent

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def brokers() -> Iterator[str]:
    from availability.local_kafka.broker import LocalKafka, Settings, kafka_answers

    bootstrap = os.environ.get("AVAILABILITY_BROKERS", "127.0.0.1:9092")
    if kafka_answers(bootstrap, timeout=3.0):
        yield bootstrap
        return
    broker = LocalKafka(Settings.from_env())
    yield broker.start()
    broker.stop()


@pytest.fixture
def topics(brokers: str, request: pytest.FixtureRequest) -> TopicNames:
    """The four topics under names unique to this test, so tests never share state."""
    prefix = f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace(
        "]", "")
    names = TopicNames(
        events=f"{prefix}.events",
        dlq=f"{prefix}.dlq",
        positions=f"{prefix}.positions",
        channels=f"{prefix}.channels",
    )
    partitions = getattr(request, "param", 4)
    create_topics(brokers, names, partitions=partitions)
    return names


@pytest.fixture
def codec() -> Codec:
    return Codec()


@pytest.fixture
def publish_events(brokers: str, codec: Codec):
    """Publish events (objects or raw bytes) to a topic and wait for every ack."""

    def publish(topic: str, events: list[InventoryEvent | bytes]) -> int:
        producer = ConfirmedProducer(brokers)
        for event in events:
            if isinstance(event, InventoryEvent):
                producer.produce(topic, codec.encode_event(event, topic), event.position_key)
            else:
                producer.produce(topic, event, b"raw")
        return producer.confirm()

    return publish
