from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from availability_contracts.topics import TopicNames
from availability_kafka.admin import create_topics

pytestmark = pytest.mark.kafka


def _config(brokers: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": brokers})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(15)
    return {name: entry.value for name, entry in entries.items()}


def test_snapshot_topics_are_compacted(brokers: str, topics: TopicNames) -> None:
    assert _config(brokers, topics.positions)["cleanup.policy"] == "compact"
    assert _config(brokers, topics.channels)["cleanup.policy"] == "compact"
    assert _config(brokers, topics.events)["cleanup.policy"] == "delete"
    assert _config(brokers, topics.dlq)["cleanup.policy"] == "delete"


def test_create_is_idempotent_and_partitions_configurable(brokers: str) -> None:
    import uuid

    suffix = uuid.uuid4().hex[:8]
    names = TopicNames(f"e-{suffix}", f"d-{suffix}", f"p-{suffix}", f"c-{suffix}")
    first = create_topics(brokers, names, partitions=2)
    assert all(o.created and o.partitions == 2 for o in first)
    second = create_topics(brokers, names, partitions=2)
    assert not any(o.created for o in second)
    assert [o.name for o in second] == [names.events, names.dlq, names.positions, names.channels]
