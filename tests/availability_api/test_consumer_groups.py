"""A replica reports its progress to the consumer group ``availability-api.<replica id>``.

The offsets that count are the ones in RocksDB (written with the data); the group only
mirrors them, so operators' lag tools see the replica. The replica id is made once per
data dir, so a restarted replica keeps its group.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from availability_api.replica import replica_group_id
from availability_api.store import ReplicaStore, new_replica_id
from availability_contracts.topics import TopicNames

from .conftest import SnapshotPublisher, channel_record, position_record

PARTITIONS = 4
Offsets = dict[tuple[str, int], int]


def snapshot_ends(admin: AdminClient, topics: TopicNames) -> Offsets:
    futures = admin.list_offsets({KafkaPartition(topic, p): OffsetSpec.latest()
                                  for topic in (topics.positions, topics.channels)
                                  for p in range(PARTITIONS)}, request_timeout=10)
    return {(tp.topic, tp.partition): future.result().offset
            for tp, future in futures.items()}


def committed(admin: AdminClient, group: str, topics: TopicNames) -> Offsets:
    """The group's committed offsets of both snapshot topics (-1001: none)."""
    request = ConsumerGroupTopicPartitions(group, [
        KafkaPartition(topic, p) for topic in (topics.positions, topics.channels)
        for p in range(PARTITIONS)])
    result = admin.list_consumer_group_offsets([request], request_timeout=10)[group].result()
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}


def publish(snapshots: SnapshotPublisher, topics: TopicNames, version: int,
            skus: int = 3) -> int:
    """Few keys, so some partitions stay empty (their end, 0, must be committed too)."""
    return snapshots.publish(
        topics,
        channels=[channel_record("web", f"SKU-{i}", i, version) for i in range(skus)],
        positions=[position_record(f"SKU-{i}", "DC1", i, version) for i in range(skus)])


@pytest.fixture
def admin(brokers: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": brokers})


@pytest.mark.kafka
def test_replica_commits_stored_offsets_and_keeps_its_group_across_restarts(
        topics: TopicNames, snapshots: SnapshotPublisher, api_factory: Callable[..., Any],
        admin: AdminClient, wait_for: Callable[..., Any], tmp_path: Path) -> None:
    publish(snapshots, topics, version=1)
    ends = snapshot_ends(admin, topics)
    assert 0 in ends.values()  # an empty partition is part of the check

    data_dir = tmp_path / "replica"
    first = api_factory(topics, data_dir)
    first.wait_caught_up()
    group = first.replica.group_id
    assert group == replica_group_id(first.server.store.replica_id)
    assert re.fullmatch(r"availability-api\.[A-Za-z0-9._-]+-[0-9a-f]{8}", group), group
    wait_for(lambda: committed(admin, group, topics) == ends, 15,
             f"{group} to reach the snapshot topics' ends {ends}")
    assert committed(admin, group, topics) == first.replica.stored_offsets()
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    assert description.members == []  # assign-only: a report, never a member

    # the group follows new snapshots within about a second
    publish(snapshots, topics, version=2, skus=8)
    ends = snapshot_ends(admin, topics)
    wait_for(lambda: committed(admin, group, topics) == ends, 15, f"{group} to follow")
    first.stop()

    # published while it is down: the group shows the lag ...
    publish(snapshots, topics, version=3, skus=8)
    ends = snapshot_ends(admin, topics)
    behind = committed(admin, group, topics)
    assert sum(ends.values()) - sum(behind.values()) == 16

    # ... and the restarted replica, on the same data dir, catches up in the same group
    second = api_factory(topics, data_dir)
    second.wait_caught_up()
    assert second.replica.group_id == group
    wait_for(lambda: committed(admin, group, topics) == ends, 15,
             f"{group} to reach {ends} after the restart")
    assert second.replica.records_read == 16  # resumed from RocksDB, not from the group
    assert second.replica.commit_failures == 0

    # another data dir is another replica: another group
    other = api_factory(topics, tmp_path / "other")
    other.wait_caught_up()
    assert other.replica.group_id != group


def test_the_replica_id_is_made_once_per_data_dir(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path / "replica", "p", "c")
    made = store.replica_id
    store.close()
    reopened = ReplicaStore(tmp_path / "replica", "p", "c")
    try:
        assert reopened.replica_id == made
    finally:
        reopened.close()
    fresh = ReplicaStore(tmp_path / "fresh", "p", "c")
    try:
        assert fresh.replica_id != made
    finally:
        fresh.close()


def test_a_replica_id_is_the_host_and_8_hex_digits() -> None:
    assert re.fullmatch(r"api-7\.prod-[0-9a-f]{8}", new_replica_id("api-7.prod"))
    assert re.fullmatch(r"my-host_1-[0-9a-f]{8}", new_replica_id("my host_1"))
    assert re.fullmatch(r"replica-[0-9a-f]{8}", new_replica_id(""))
    assert new_replica_id("h") != new_replica_id("h")
