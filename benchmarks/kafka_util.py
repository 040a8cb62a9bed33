"""Kafka plumbing shared by the scenarios: run topics, preloading, end offsets, scans.

Output topics are created with ``message.timestamp.type=LogAppendTime``: every
snapshot then carries the broker's append time, i.e. when it was *on the topic*, which
is what drain and freshness measure, without a consumer's polling delay in the figure.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from availability_contracts.keys import position_key
from availability_contracts.topics import TopicNames
from availability_domain.events import InventoryEvent
from availability_kafka.config import load_kafka_config
from availability_kafka.topic_reader import scan_topic, watermarks
from benchmarks.avro_events import encode_event

APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
SNAPSHOT_CONFIG = {"cleanup.policy": "compact", **APPEND_TIME}


def client_settings(brokers: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """A benchmark client's settings: its tuning, then $AVAILABILITY_KAFKA_CONFIG (set by
    ``--kafka-config``), then the brokers, as every product command does."""
    return load_kafka_config(None, brokers).client(defaults)


@dataclass
class TopicJanitor:
    """Creates uniquely named topics for one benchmark invocation and deletes them after.

    The broker may be shared with other people's work: never touch other topics.
    """

    brokers: str
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    created: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.admin = AdminClient(client_settings(self.brokers, {}))

    def create(self, configs: dict[str, dict[str, str]], partitions: int) -> None:
        new = [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)
               for name, config in configs.items()]
        for name, future in self.admin.create_topics(new, operation_timeout=30).items():
            future.result(30)
            self.created.append(name)
        deadline = time.monotonic() + 30
        while True:
            listed = self.admin.list_topics(timeout=30).topics
            if all(name in listed and len(listed[name].partitions) == partitions
                   for name in configs):
                return
            if time.monotonic() > deadline:
                raise KafkaException(f"topics not visible: {sorted(configs)}")
            time.sleep(0.1)

    def events_topic(self, name: str, partitions: int = 4) -> str:
        topic = f"{self.prefix}.{name}"
        self.create({topic: APPEND_TIME}, partitions)
        return topic

    def run_topics(self, run: str, events: str, partitions: int = 4) -> TopicNames:
        """Fresh dlq/positions/channels topics for one run, reading ``events``."""
        names = TopicNames(events, f"{self.prefix}.{run}.dlq", f"{self.prefix}.{run}.positions",
                           f"{self.prefix}.{run}.channels")
        self.create({names.dlq: APPEND_TIME, names.positions: SNAPSHOT_CONFIG,
                     names.channels: SNAPSHOT_CONFIG}, partitions)
        return names

    def group(self, name: str) -> str:
        """A consumer group id for one system run, deleted with the topics."""
        group = f"{self.prefix}.{name}.{len(self.groups)}"
        self.groups.append(group)
        return group

    def delete_all(self) -> None:
        """Delete the topics and consumer groups this invocation created."""
        if self.groups:
            futures = self.admin.delete_consumer_groups(self.groups, request_timeout=30)
            for future in futures.values():
                with contextlib.suppress(KafkaException):  # never committed: nothing stored
                    future.result(30)
            self.groups.clear()
        if self.created:
            futures = self.admin.delete_topics(self.created, operation_timeout=60)
            for future in futures.values():
                with contextlib.suppress(KafkaException):  # already gone: nothing to clean
                    future.result(60)
            self.created.clear()


def load_producer(brokers: str, linger_ms: int = 5) -> Producer:
    """A source system's producer: batched, lz4, idempotent (like ConfirmedProducer)."""
    return Producer(client_settings(brokers, {
        "linger.ms": linger_ms, "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4",
        "enable.idempotence": True}))


class Delivery:
    """Counts acknowledged messages and keeps the first failures (nothing lost silently)."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failures: list[str] = []

    def __call__(self, err: object, msg: object) -> None:
        if err is None:
            self.delivered += 1
        elif len(self.failures) < 5:
            self.failures.append(str(err))

    def check(self, producer: Producer, expected: int, timeout: float = 120) -> None:
        remaining = producer.flush(timeout)
        if remaining or self.failures or self.delivered != expected:
            raise RuntimeError(f"delivery: {self.delivered}/{expected} acknowledged, "
                               f"{remaining} pending, failures {self.failures}")


def produce_events(producer: Producer, topic: str, events: Iterable[InventoryEvent],
                   delivery: Delivery) -> Iterator[InventoryEvent]:
    """Produce each event (keyed by position) and pass it on; the caller flushes."""
    produce = producer.produce
    poll = producer.poll
    for count, event in enumerate(events, 1):
        key = position_key(event.sku, event.location_id)
        while True:
            try:
                produce(topic, encode_event(event), key, on_delivery=delivery)
                break
            except BufferError:
                poll(0.05)
        if count % 1000 == 0:
            poll(0)
        yield event


def end_offsets(consumer: Consumer, topics: Iterable[str]) -> dict[str, int]:
    """Sum of high watermarks per topic (records ever written; nothing is deleted here).

    Retries while a new topic's leaders are not yet known to this client.
    """
    totals: dict[str, int] = {}
    for topic in topics:
        for attempt in range(50):
            try:
                partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                totals[topic] = sum(watermarks(consumer, topic, p, 10)[1] for p in partitions)
                break
            except KafkaException:
                if attempt == 49:
                    raise
                time.sleep(0.1)
    return totals


def admin_consumer(brokers: str) -> Consumer:
    return Consumer(client_settings(brokers, {"group.id": f"bench-{uuid.uuid4()}",
                                              "enable.auto.commit": False}))


@dataclass
class Scan:
    """Latest raw value per key of a topic plus its record count and time range."""

    latest: dict[str, bytes]
    records: int
    first_ms: int | None
    last_ms: int | None


def scan(brokers: str, topic: str, timeout: float = 600) -> Scan:
    """Read ``topic`` from the beginning to its current end; latest value per key."""
    latest: dict[str, bytes] = {}
    records = 0
    first: int | None = None
    last: int | None = None
    for key, value, stamp in read_records(brokers, topic, timeout):
        records += 1
        if first is None or stamp < first:
            first = stamp
        if last is None or stamp > last:
            last = stamp
        latest[key] = value
    return Scan(latest, records, first, last)


def read_records(brokers: str, topic: str, timeout: float = 600
                 ) -> Iterator[tuple[str, bytes, int]]:
    """Every record of ``topic`` up to its current end: (key, value, timestamp ms)."""
    for message in scan_topic(brokers, topic, timeout, batch=10_000):
        yield message.key().decode(), message.value(), message.timestamp()[1]
