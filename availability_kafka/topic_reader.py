"""Reads a topic from the beginning up to its current end (a bounded scan).

Used to look at the compacted snapshot topics as a table (latest value per key), by
the tests, the reconciliation report and the benchmarks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from availability_kafka.config import KafkaConnection

T = TypeVar("T")
_TRANSIENT = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError._PARTITION_EOF}


def watermarks(consumer: Consumer, topic: str, partition: int, timeout: float = 30.0
               ) -> tuple[int, int]:
    """(low, high) offsets of a partition, riding out a just-created topic's leader
    election (NOT_LEADER_FOR_PARTITION / LEADER_NOT_AVAILABLE are retriable)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=max(0.1, deadline -
                                                                   time.monotonic()))
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            retriable = error.retriable() or error.code() in _TRANSIENT
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def scan_topic(brokers: KafkaConnection | str, topic: str, timeout: float = 60.0,
               batch: int = 1000
               ) -> Iterator[Message]:
    """Yield every message of ``topic`` present when the scan starts, partition by partition."""
    consumer = Consumer(KafkaConnection.of(brokers).client({
        "enable.partition.eof": False,
        "fetch.max.bytes": 64 * 1024 * 1024,
    }) | {"group.id": f"availability-scan-{uuid.uuid4()}", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if metadata.error is not None:
            raise RuntimeError(f"topic {topic!r}: {metadata.error}")
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = watermarks(consumer, topic, partition, timeout)
            if high > low:
                ends[partition] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"scan of {topic!r} did not reach the end in {timeout}s")
            for message in consumer.consume(batch, 0.5):
                error = message.error()
                if error is not None:
                    if error.retriable() or error.code() in _TRANSIENT:
                        continue  # e.g. a just-created topic whose leader is not known yet
                    raise RuntimeError(f"scan of {topic!r}: {error}")
                partition = message.partition()
                if partition not in ends:
                    continue
                yield message
                if message.offset() + 1 >= ends[partition]:
                    del ends[partition]
    finally:
        consumer.close()


def latest_by_key(brokers: KafkaConnection | str, topic: str, decode: Callable[[bytes], T],
                  timeout: float = 60.0) -> dict[str, T]:
    """The table a compacted topic stands for: the last value per key (tombstones remove)."""
    table: dict[str, Any] = {}
    for message in scan_topic(brokers, topic, timeout):
        key = message.key().decode() if message.key() is not None else ""
        if message.value() is None:
            table.pop(key, None)
        else:
            table[key] = decode(message.value())
    return table
