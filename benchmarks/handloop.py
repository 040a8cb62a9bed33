"""The baseline: the single-process confluent-kafka loop a competent user would write.

    python -m benchmarks.handloop --rules R --events-topic E --positions-topic P ...

consume a batch (up to 5,000 messages, 2 ms wait) -> decode with the project codec -> fold each
event with the pure domain (dict of per-SKU state) -> publish each touched SKU once per
batch (the same coalescing the engine does per Bytewax batch) -> produce with a
delivery callback; every second: flush, fail on any delivery error, then commit the
consumer offsets (at-least-once). Reservation expiry runs from a timer heap.

What it does not do, unlike the engine: durable state. After a crash it must replay
the topic from the beginning (the recovery scenario measures that).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer

from availability_contracts.codec import Codec
from availability_contracts.errors import InvalidEvent
from availability_domain.events import decode_event
from availability_domain.rules import load_rules
from benchmarks.fold import SkuFold, now_ms
from benchmarks.kafka_util import client_settings

BATCH = 5_000
POLL_TIMEOUT_S = 0.002
"""consume() returns after BATCH messages or this long: short, so a quiet stream is not
held back waiting for a full batch (the engine's source waits 1 ms)."""
COMMIT_INTERVAL_S = 1.0


class Failures:
    """Delivery callback: acknowledged count and any error (the loop dies on one)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, err: KafkaError | None, msg: object) -> None:
        if err is not None:
            self.errors.append(str(err))


def run(args: argparse.Namespace) -> int:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fold = SkuFold(load_rules(args.rules), Codec())
    consumer = Consumer(client_settings(args.brokers, {
        "group.id": args.group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "fetch.wait.max.ms": 10, "fetch.min.bytes": 1,
    }))
    producer = Producer(client_settings(args.brokers, {
        "linger.ms": 5, "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4",
        "enable.idempotence": True,
    }))
    failures = Failures()
    topics = (args.positions_topic, args.channels_topic, args.dlq_topic)
    decode = partial(decode_event, fold.codec)
    consumer.subscribe([args.events_topic])
    print(f"handloop: reading {args.events_topic}", flush=True)

    def produce(outputs: list[tuple[int, str, bytes]]) -> None:
        for target, key, value in outputs:
            while True:
                try:
                    producer.produce(topics[target], value, key, on_delivery=failures)
                    break
                except BufferError:
                    producer.poll(0.05)

    last_commit = time.monotonic()
    pending_commit = False
    while not stop:
        messages = consumer.consume(BATCH, POLL_TIMEOUT_S)
        now = now_ms()
        if messages:
            touched: dict[str, set[str]] = {}
            outputs: list[tuple[int, str, bytes]] = []
            for message in messages:
                if message.error() is not None:
                    raise RuntimeError(f"consume failed: {message.error()}")
                try:
                    event = decode(message.value())
                except InvalidEvent as exc:
                    outputs.append(fold.dead_letter(message.key(), message.value(),
                                                    message.topic(), message.partition(),
                                                    message.offset(), str(exc)))
                    continue
                status, detail = fold.apply(event, now)
                if status == "applied":
                    touched.setdefault(event.sku, set()).update(detail)
                elif status == "rejected":
                    outputs.append(fold.dead_letter(message.key(), message.value(),
                                                    message.topic(), message.partition(),
                                                    message.offset(), str(detail)))
            for sku, locations in touched.items():
                outputs += fold.publish(sku, locations, now)
            produce(outputs)
            pending_commit = True
        produce(fold.expire_due(now))
        producer.poll(0)
        if pending_commit and time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
            commit(consumer, producer, failures)
            last_commit, pending_commit = time.monotonic(), False
    commit(consumer, producer, failures)
    consumer.close()
    print("handloop: stopped cleanly", flush=True)
    return 0


def commit(consumer: Consumer, producer: Producer, failures: Failures) -> None:
    """Outputs acknowledged first, then the input offsets: at-least-once."""
    if producer.flush(60):
        raise RuntimeError("output not acknowledged within 60 s")
    if failures.errors:
        raise RuntimeError(f"delivery failed: {failures.errors[:3]}")
    try:
        consumer.commit(asynchronous=False)
    except Exception as exc:  # nothing consumed yet since the last commit
        if "NO_OFFSET" not in str(exc):
            raise


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--rules", required=True, type=Path)
    parser.add_argument("--events-topic", required=True)
    parser.add_argument("--positions-topic", required=True)
    parser.add_argument("--channels-topic", required=True)
    parser.add_argument("--dlq-topic", required=True)
    parser.add_argument("--group", default=f"handloop-{uuid.uuid4().hex[:8]}")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run(parse_args()))
