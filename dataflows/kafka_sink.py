"""Writes the flow's output records to Kafka, never losing one silently.

bytewax's own KafkaSink has no delivery callback and can die on BufferError. Here
every batch is confirmed (acknowledged by the broker) before ``write_batch`` returns,
so Bytewax cannot commit an epoch whose output is still in a local queue; a failed
delivery raises and stops the flow, which then resumes from its last recovery epoch.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from availability_kafka.config import KafkaConnection
from availability_kafka.delivery import ConfirmedProducer
from dataflows.metrics import FRESHNESS


class OutgoingRecord(NamedTuple):
    topic: str
    key: str | bytes | None
    value: bytes | None
    """None: a tombstone, deleting ``key`` from a compacted topic."""
    origin_ms: int = -1
    """Kafka timestamp of the oldest input that caused it, for the freshness metric."""


KeyedRecords = tuple[str, list[OutgoingRecord]]
"""What reaches the sink: (state key, the records one call of that key's logic made).
One item per call rather than per record: Bytewax's cost is per item."""


class _ProducerPartition(StatelessSinkPartition[KeyedRecords]):
    def __init__(self, brokers: KafkaConnection | str, config: dict[str, Any]) -> None:
        self._producer = ConfirmedProducer(brokers, config)

    def write_batch(self, items: list[KeyedRecords]) -> None:
        """Items are (state key, records) pairs; the state key is not used here."""
        produce = self._producer.produce
        origins = set()
        for _, records in items:
            for topic, key, value, origin_ms in records:
                produce(topic, value, key)
                origins.add(origin_ms)
        self._producer.confirm()
        acked = time.time() * 1000
        observe = FRESHNESS.observe
        for origin in origins:
            if origin >= 0:
                observe(max(0.0, acked - origin) / 1000)

    def close(self) -> None:
        self._producer.confirm()


class ConfirmedKafkaSink(DynamicSink[KeyedRecords]):
    def __init__(self, brokers: KafkaConnection | str,
                 producer_config: dict[str, Any] | None = None) -> None:
        self.brokers = brokers
        self.producer_config = producer_config or {}

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(self.brokers, self.producer_config)
