"""Creating the engine's topics, idempotently, and waiting until the cluster lists them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from availability_contracts.topics import TopicNames


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    created: bool
    partitions: int


def create_topics(
    brokers: str,
    names: TopicNames,
    partitions: int = 4,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> list[TopicOutcome]:
    """Create the topics that are missing; existing ones are left as they are."""
    admin = AdminClient({"bootstrap.servers": brokers})
    existing = admin.list_topics(timeout=timeout).topics
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                 config=config)
        for name, config in names.configs().items()
        if name not in existing
    ]
    created: set[str] = set()
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result(timeout)
                created.add(name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
    metadata = _wait_until_listed(admin, list(names.configs()), timeout)
    return [
        TopicOutcome(name, name in created, len(metadata[name].partitions))
        for name in names.configs()
    ]


def _wait_until_listed(admin: AdminClient, names: list[str], timeout: float
                       ) -> dict[str, Any]:
    """Metadata of ``names`` once every one of them is visible with its partitions."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        if all(name in topics and topics[name].partitions for name in names):
            return topics
        if time.monotonic() > deadline:
            missing = [name for name in names if name not in topics]
            raise KafkaException(f"topics not visible after {timeout}s: {missing}")
        time.sleep(0.1)
