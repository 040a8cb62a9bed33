"""The engine reports its progress to the consumer group ``availability-engine.<flow_id>``.

The recovery snapshots keep the offsets the engine resumes from; the group only mirrors
them (committed at each snapshot), so operators' lag tools see the engine. It never
joins the group: the group has offsets and no members.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, Producer
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from availability_contracts.codec import Codec
from availability_contracts.topics import TopicNames
from availability_domain.events import EventType, InventoryEvent
from dataflows.kafka_source import engine_group_id
from dataflows.settings import EngineSettings

pytestmark = pytest.mark.kafka

RULES = """
[locations.DC1]
type = "dc"
tags = ["ship"]

[channels.web]
location_types = ["dc"]
"""

NOW = int(time.time() * 1000)
PARTITIONS = 4
EMPTY_PARTITION = 3
"""Gets no events: its committed offset must still be its end (0)."""
GROUP = engine_group_id(EngineSettings.defaults().flow_id)

Offsets = dict[tuple[str, int], int]


def publish_to_partitions(brokers: str, codec: Codec, topic: str, count: int,
                          first: int = 0) -> None:
    """``count`` receipts spread over every partition but :data:`EMPTY_PARTITION`."""
    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True})
    for i in range(first, first + count):
        event = InventoryEvent(event_id=f"e{i}", event_type=EventType.RECEIPT,
                               occurred_at=NOW - 60_000 + i, source="test", sku=f"SKU-{i % 7}",
                               location_id="DC1", quantity=1)
        producer.produce(topic, codec.encode_event(event, topic), event.position_key,
                         partition=i % EMPTY_PARTITION)
    assert producer.flush(30) == 0


def end_offsets(admin: AdminClient, topic: str) -> Offsets:
    futures = admin.list_offsets({KafkaPartition(topic, p): OffsetSpec.latest()
                                  for p in range(PARTITIONS)}, request_timeout=10)
    return {(tp.topic, tp.partition): future.result().offset
            for tp, future in futures.items()}


def committed(admin: AdminClient, group: str, topic: str) -> Offsets:
    """The group's committed offsets of ``topic`` (-1001: none)."""
    request = ConsumerGroupTopicPartitions(
        group, [KafkaPartition(topic, p) for p in range(PARTITIONS)])
    result = admin.list_consumer_group_offsets([request], request_timeout=10)[group].result()
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


@pytest.fixture
def admin(brokers: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": brokers})


def test_engine_commits_its_resume_offsets_to_its_group(
        brokers: str, topics: TopicNames, codec: Codec, rules_file: Path, admin: AdminClient,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any],
        tmp_path: Path) -> None:
    assert GROUP == "availability-engine.availability"
    publish_to_partitions(brokers, codec, topics.events, 60)
    ends = end_offsets(admin, topics.events)
    assert ends[(topics.events, EMPTY_PARTITION)] == 0
    assert all(ends[(topics.events, p)] == 20 for p in range(EMPTY_PARTITION))

    engine = engine_factory(topics, rules_file).start()
    try:
        # the tests' engine snapshots every second: within an epoch or two
        wait_for(lambda: committed(admin, GROUP, topics.events) == ends, 60,
                 f"{GROUP} to reach the end offsets {ends}")
    except AssertionError:
        print(engine.log())
        raise
    # a report from an assign-only consumer: the group has offsets, never members
    description = admin.describe_consumer_groups([GROUP], request_timeout=10)[GROUP].result()
    assert description.members == []
    assert description.state == ConsumerGroupState.EMPTY

    # the group follows the engine
    publish_to_partitions(brokers, codec, topics.events, 30, first=60)
    ends = end_offsets(admin, topics.events)
    wait_for(lambda: committed(admin, GROUP, topics.events) == ends, 30,
             f"{GROUP} to follow to {ends}")
    assert engine.stop() in (0, 130)
    assert committed(admin, GROUP, topics.events) == ends

    # a restart resumes from its recovery snapshot (not from the group) and reports again
    restarted = engine_factory(topics, rules_file, recovery_dir=tmp_path / "recovery").start()
    publish_to_partitions(brokers, codec, topics.events, 9, first=90)
    ends = end_offsets(admin, topics.events)
    try:
        wait_for(lambda: committed(admin, GROUP, topics.events) == ends, 60,
                 f"{GROUP} to reach {ends} after the restart")
    except AssertionError:
        print(restarted.log())
        raise
    assert restarted.stop() in (0, 130)
    assert "cannot commit the progress" not in engine.log() + restarted.log()
