"""The peer: a Quix Streams application doing the same fold with the same pure code.

    python -m benchmarks.quix_app --rules R --events-topic E --positions-topic P ...

One Application (one process, consumer group, at-least-once, commit every 5 s like
the engine's default epoch) reads the events as bytes; ``apply(expand=True)`` decodes
with the project codec, folds with the pure domain and returns the encoded snapshots,
which ``to_topic`` routes to the positions/channels/dlq topic; Quix flushes its
producer and checks deliveries at every checkpoint.

How it is made fair:

* state is a dict keyed by SKU in the process, as in the hand loop. The State API
  would need the events re-keyed by SKU (``group_by``: a repartition topic, one more
  produce and consume per event) and serialises the whole per-SKU value on every
  ``set``; with SKU state that grows with every event id seen (the dedupe memory),
  that costs far more than the fold itself. The dict is the fastest correct choice for
  one process, so the peer is measured at its best;
* Quix calls user code once per message, so snapshots are published per event: it has
  no per-key batch hook to coalesce like the engine and the hand loop do;
* Quix has no processing-time timers: an SKU's expired reservations are released the
  next time an event of that SKU arrives (the drain workload has none pending).
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from quixstreams import Application, message_context
from quixstreams.models.serializers import SerializationContext, Serializer

from availability_contracts.codec import Codec
from availability_contracts.errors import InvalidEvent
from availability_domain.events import decode_event
from availability_domain.rules import load_rules
from availability_kafka.config import load_kafka_config
from benchmarks.fold import Output, SkuFold, now_ms


class OutputValue(Serializer):
    """Our outputs are already Avro bytes: (target, key, value) -> value."""

    def __call__(self, value: Output, ctx: SerializationContext) -> bytes:
        return value[2]


def build(args: argparse.Namespace) -> Application:
    # $AVAILABILITY_KAFKA_CONFIG (``--kafka-config``), as for the other systems
    secured = dict(load_kafka_config(None, args.brokers).settings)
    app = Application(
        broker_address=args.brokers, consumer_group=args.group,
        auto_offset_reset="earliest", commit_interval=5.0, loglevel="WARNING",
        use_changelog_topics=False, auto_create_topics=False,
        producer_extra_config={"linger.ms": 5, "batch.num.messages": 10000,
                               "compression.type": "lz4", **secured},
        consumer_extra_config=dict(secured),
    )
    events = app.topic(args.events_topic, value_deserializer="bytes",
                       key_deserializer="bytes")
    outputs = [app.topic(name, key_serializer="str", value_serializer=OutputValue())
               for name in (args.positions_topic, args.channels_topic, args.dlq_topic)]
    fold = SkuFold(load_rules(args.rules), Codec())
    decode = partial(decode_event, fold.codec)

    def dead_letter(value: bytes, reason: str) -> list[Output]:
        context = message_context()
        return [fold.dead_letter(context.key if isinstance(context.key, bytes) else None,
                                 value, context.topic, context.partition, context.offset,
                                 reason)]

    def fold_one(value: bytes) -> list[Output]:
        try:
            event = decode(value)
        except InvalidEvent as exc:
            return dead_letter(value, str(exc))
        now = now_ms()
        status, detail = fold.apply(event, now)
        if status == "applied":
            return fold.publish(event.sku, detail, now)
        if status == "rejected":
            return dead_letter(value, str(detail))
        return []

    def route(value: Output, key: Any, timestamp: int, headers: Any) -> Any:
        return outputs[value[0]]

    sdf = app.dataframe(events)
    sdf = sdf.apply(fold_one, expand=True)
    sdf.to_topic(route, key=lambda value: value[1])
    return app


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--rules", required=True, type=Path)
    parser.add_argument("--events-topic", required=True)
    parser.add_argument("--positions-topic", required=True)
    parser.add_argument("--channels-topic", required=True)
    parser.add_argument("--dlq-topic", required=True)
    parser.add_argument("--group", default=f"quix-{uuid.uuid4().hex[:8]}")
    return parser.parse_args(argv)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args()
    app = build(args)
    print(f"quix: reading {args.events_topic}", flush=True)
    app.run()
    print("quix: stopped cleanly", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
