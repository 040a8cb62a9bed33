"""The events reader on the real broker: which records an earlier run may have read."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from availability_contracts.topics import TopicNames
from dataflows.kafka_source import InventoryEventSource, SourceRecord


def _produce(brokers: str, topic: str, count: int, start: int) -> None:
    producer = Producer({"bootstrap.servers": brokers})
    for n in range(start, start + count):
        producer.produce(topic, f"v{n}".encode(), b"k", partition=0)
    assert producer.flush(15) == 0


def _read(reader: object, count: int) -> list[SourceRecord]:
    records: list[SourceRecord] = []
    deadline = time.monotonic() + 30
    while len(records) < count and time.monotonic() < deadline:
        records.extend(reader.next_batch())  # type: ignore[attr-defined]
    return records


@pytest.mark.parametrize("topics", [1], indirect=True)
def test_records_already_in_the_partition_at_start_count_as_possibly_read(
        brokers: str, topics: TopicNames) -> None:
    """A crashed run can only have read what was in the partition before this run began;
    what arrives later is new to every run, and a restored SKU need not republish for it."""
    _produce(brokers, topics.events, 3, 0)
    source = InventoryEventSource(brokers, topics.events, batch_size=100)
    reader = source.build_part("availability.events", f"0-{topics.events}", None)
    _produce(brokers, topics.events, 2, 3)
    records = _read(reader, 5)
    reader.close()
    assert [(r.offset, r.value, r.replayed) for r in records] == [
        (0, b"v0", True), (1, b"v1", True), (2, b"v2", True), (3, b"v3", False),
        (4, b"v4", False)]

    resumed = source.build_part("availability.events", f"0-{topics.events}", 4)
    _produce(brokers, topics.events, 1, 5)
    records = _read(resumed, 2)
    resumed.close()
    assert [(r.offset, r.replayed) for r in records] == [(4, True), (5, False)]
