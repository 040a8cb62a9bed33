"""`availability produce --file events.jsonl`: publish canonical events."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from confluent_kafka import KafkaException

from availability.cli import CommandError, add_brokers_argument
from availability.codec import Codec
from availability.delivery import ConfirmedProducer, DeliveryFailed
from availability.event_file import BadLine, read_event_file
from availability.topics import TopicNames


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "produce",
        help="publish canonical events from a JSON-lines file",
        description=(
            "Publish canonical inventory events from JSON lines (the Avro field names; "
            "times as ISO-8601 or epoch ms) to the events topic, key sku|location_id. "
            "Invalid lines are reported with their line number and reason and are not "
            "published; the exit code is 1 if any line was invalid. Every published "
            "message is confirmed by the broker before the command exits."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--file", required=True, type=Path, help="JSON-lines file, or - for stdin")
    add_brokers_argument(parser)
    parser.add_argument("--topic", default=TopicNames().events, help="events topic")
    parser.add_argument("--schema-registry", default=None,
                        help="Confluent Schema Registry URL (default: plain Avro)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    if str(path) != "-" and not path.is_file():
        raise CommandError(f"no such file: {path}")
    codec = Codec(args.schema_registry)
    producer = ConfirmedProducer(args.brokers)
    bad = 0
    source = Path("/dev/stdin") if str(path) == "-" else path
    try:
        for item in read_event_file(source):
            if isinstance(item, BadLine):
                bad += 1
                print(f"{path}:{item.line_number}: {item.reason}", file=sys.stderr)
                continue
            producer.produce(args.topic, codec.encode_event(item, args.topic), item.position_key)
        delivered = producer.confirm()
    except (DeliveryFailed, KafkaException) as exc:
        raise CommandError(f"publishing to {args.brokers} failed: {exc}") from exc
    print(f"published {delivered} event(s) to {args.topic}; {bad} invalid line(s) skipped")
    return 1 if bad else 0
