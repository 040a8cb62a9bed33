"""A Kafka producer that never loses a message silently.

Every produce registers a delivery callback; failures are collected and raised by
:meth:`ConfirmedProducer.confirm`, and a full local queue is waited out instead of
failing with BufferError.
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
        self._producer = Producer(settings)
        self.delivered = 0
        self.failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failures.append(f"{msg.topic()}[{msg.partition()}] key={msg.key()!r}: {err}")

    def produce(self, topic: str, value: bytes | None, key: str | bytes | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def confirm(self, timeout: float = 60.0) -> int:
        """Wait until every message is acknowledged; raise if any failed or timed out."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryFailed(f"{remaining} message(s) not acknowledged within {timeout}s")
        if self.failures:
            shown = "; ".join(self.failures[:5])
            raise DeliveryFailed(f"{len(self.failures)} message(s) failed delivery: {shown}")
        return self.delivered
