"""A Kafka producer that never loses a message silently.

librdkafka reports every failed delivery to the producer's callback (successes are not
reported: a Python call per acknowledged record cost more than the produce itself);
failures are collected and raised by :meth:`ConfirmedProducer.confirm`, which waits
until every record is acknowledged or failed. A full local queue is waited out instead
of failing with BufferError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from availability_contracts.errors import AvailabilityError
from availability_kafka.config import KafkaConnection


class DeliveryFailed(AvailabilityError, RuntimeError):
    """At least one message was not acknowledged by the broker."""

    code = "delivery_failed"


def enable_idempotence_settings() -> dict[str, Any]:
    """What no file or caller may change: every record acknowledged by all in-sync
    replicas, retries without duplicates."""
    return {"enable.idempotence": True, "acks": "all"}


POLL_EVERY = 1_000
"""Produces between two polls of the producer's callbacks (failed deliveries, errors)."""


DEFAULT_PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 500000,
    "compression.type": "lz4",
    "enable.idempotence": True,
    "topic.metadata.refresh.fast.interval.ms": 20,  # fresh topics: find leaders quickly
}


class ConfirmedProducer:
    def __init__(self, brokers: KafkaConnection | str,
                 config: Mapping[str, Any] | None = None) -> None:
        """``config`` tunes this producer (tests, benchmarks); the connection's file
        settings apply over the defaults, and idempotence with acks=all always holds."""
        settings = KafkaConnection.of(brokers).client({**DEFAULT_PRODUCER_CONFIG, **(config or {})})
        settings.update(enable_idempotence_settings())
        settings.update({"delivery.report.only.error": True, "on_delivery": self._on_failure})
        self._producer = Producer(settings)
        self.produced = 0
        self.failures: list[str] = []
        self._unpolled = 0

    def _on_failure(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failures.append(f"{msg.topic()}[{msg.partition()}] key={msg.key()!r}: {err}")

    @property
    def delivered(self) -> int:
        """Records acknowledged so far, once :meth:`confirm` has returned."""
        return self.produced - len(self.failures)

    def produce(self, topic: str, value: bytes | None, key: str | bytes | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.produced += 1
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._unpolled = 0
            self._producer.poll(0)

    def confirm(self, timeout: float = 60.0) -> int:
        """Wait until every record is acknowledged; raise if any failed or timed out.
        Returns how many were acknowledged since this producer was made."""
        remaining = self._producer.flush(timeout)
        self._unpolled = 0
        if remaining:
            raise DeliveryFailed(f"{remaining} message(s) not acknowledged within {timeout}s")
        if self.failures:
            shown = "; ".join(self.failures[:5])
            raise DeliveryFailed(f"{len(self.failures)} message(s) failed delivery: {shown}")
        return self.delivered
