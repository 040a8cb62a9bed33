"""Reads `inventory.events` partitions as raw records; offsets live in Bytewax recovery.

Our own source instead of bytewax's KafkaSource: it hands on light tuples rather than
a dataclass per message and skips the per-second statistics parsing. Each Kafka
partition is one Bytewax partition, so resume offsets are part of the recovery
snapshot and no consumer group is used.
"""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from dataflows.metrics import INPUT_LAG

STOP_REQUESTED = threading.Event()
"""Set by the engine's signal handler: partitions end, so the flow drains and exits."""


class SourceRecord(NamedTuple):
    """One consumed message and where it came from (for the DLQ)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class _PartitionReader(StatefulSourcePartition[SourceRecord, int]):
    def __init__(self, config: dict[str, Any], topic: str, partition: int, offset: int,
                 batch_size: int) -> None:
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic = topic
        self._partition = partition
        self._next_offset = offset
        self._batch_size = batch_size
        self._lag_gauge = INPUT_LAG.labels(str(partition))
        self._lag_due = 0.0

    def next_batch(self) -> list[SourceRecord]:
        if STOP_REQUESTED.is_set():
            raise StopIteration
        messages = self._consumer.consume(self._batch_size, 0.001)
        now = time.monotonic()
        if now >= self._lag_due:
            self._lag_due = now + 1.0
            self._report_lag()
        if not messages:
            return []
        batch = []
        topic, partition = self._topic, self._partition
        for message in messages:
            error = message.error()
            if error is not None:
                raise RuntimeError(f"consuming {topic}[{partition}] failed: {error}")
            batch.append(SourceRecord(topic, partition, message.offset(), message.key(),
                                      message.value(), message.timestamp()[1]))
        self._next_offset = batch[-1].offset + 1
        return batch

    def _report_lag(self) -> None:
        """From the consumer's cached high watermark: no broker round trip."""
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self._topic, self._partition), cached=True)
        if high >= 0 and self._next_offset >= 0:
            self._lag_gauge.set(max(0, high - self._next_offset))

    def snapshot(self) -> int:
        return self._next_offset

    def close(self) -> None:
        self._consumer.close()


class InventoryEventSource(FixedPartitionedSource[SourceRecord, int]):
    def __init__(self, brokers: str, topic: str, batch_size: int = 2000,
                 consumer_config: dict[str, Any] | None = None) -> None:
        self.brokers = brokers
        self.topic = topic
        self.batch_size = batch_size
        self.consumer_config = consumer_config or {}

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self.brokers, **self.consumer_config})
        metadata = admin.list_topics(self.topic, timeout=30)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            reason = topic.error if topic is not None else "not found"
            raise RuntimeError(f"input topic {self.topic!r} unavailable: {reason}; "
                               "run `availability topics create`")
        return [f"{partition}-{self.topic}" for partition in sorted(topic.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _PartitionReader:
        partition = int(for_part.split("-", 1)[0])
        config = {
            "bootstrap.servers": self.brokers,
            "group.id": "availability-engine-unused",
            "enable.auto.commit": False,
            "fetch.min.bytes": 1,
            "fetch.wait.max.ms": 10,
            **self.consumer_config,
        }
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _PartitionReader(config, self.topic, partition, offset, self.batch_size)
