"""`availability bootstrap --erp-snapshot F`: initial load of stock from an ERP export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException

from availability.cli import CommandError, add_brokers_argument, kafka_connection
from availability_contracts.codec import Codec, RegistryError
from availability_contracts.times import iso_ms
from availability_contracts.topics import TopicNames
from availability_kafka.delivery import ConfirmedProducer, DeliveryFailed

if TYPE_CHECKING:  # imported lazily: `availability --help` need not load polars
    from availability.erp import ErpSnapshot


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bootstrap",
        help="publish an ERP stock snapshot as COUNT events (initial load)",
        description=(
            "Read an ERP stock export (CSV or Parquet with columns sku, location_id, "
            "on_hand, as_of; other columns are ignored) and publish one COUNT per row: "
            "on_hand was that many units at as_of (ISO-8601 with a time of day, no "
            "offset = UTC, or epoch milliseconds), source 'erp', key sku|location_id. "
            "The whole file is validated first: any bad row (missing or badly typed "
            "value, negative on_hand, '|' in an id, duplicate sku+location_id) is "
            "reported with file, row and column, nothing is published and the exit code "
            "is 1. Event ids are derived from each row's content, so publishing the "
            "same file again changes nothing in the engine (event_id dedupe). Every "
            "message is confirmed by the broker before the command exits."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--erp-snapshot", required=True, type=Path,
                        help="ERP export: .csv or .parquet")
    add_brokers_argument(parser)
    parser.add_argument("--events-topic", default=TopicNames().events, help="events topic")
    from availability.cli.registry_options import add_registry_arguments
    add_registry_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the file and report what would be published")
    parser.set_defaults(run=run)


def load_snapshot(path: Path) -> ErpSnapshot:
    """The validated snapshot, or a CommandError after listing every problem on stderr."""
    from availability.erp import ErpFileError, read_snapshot

    try:
        return read_snapshot(path)
    except ErpFileError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        if exc.total > len(exc.problems):
            print(f"{path}: ... and {exc.total - len(exc.problems)} more", file=sys.stderr)
        raise CommandError(f"{path}: {exc.total} problem(s); nothing published") from exc


def describe(snapshot: ErpSnapshot) -> str:
    frame = snapshot.frame
    first, last = int(frame["as_of"].min()), int(frame["as_of"].max())  # type: ignore[arg-type]
    when = iso_ms(first) if first == last else f"{iso_ms(first)} .. {iso_ms(last)}"
    return (f"{len(snapshot)} row(s), {frame['sku'].n_unique()} SKU(s), "
            f"{frame['location_id'].n_unique()} location(s), as of {when}")


def run(args: argparse.Namespace) -> int:
    from availability.erp import bootstrap_events

    snapshot = load_snapshot(args.erp_snapshot)
    print(f"{args.erp_snapshot}: {describe(snapshot)}")
    if args.dry_run:
        print(f"dry run: {len(snapshot)} COUNT event(s) would be published to "
              f"{args.events_topic}")
        return 0
    from availability.cli.registry_options import registry_settings
    codec = Codec(registry_settings(args))
    producer = ConfirmedProducer(kafka_connection(args, reach=True))
    try:
        for event in bootstrap_events(snapshot):
            producer.produce(args.events_topic, codec.encode_event(event, args.events_topic),
                             event.position_key)
        delivered = producer.confirm()
    except (DeliveryFailed, KafkaException, RegistryError) as exc:
        raise CommandError(f"publishing to {args.brokers} failed: {exc}") from exc
    print(f"published {delivered} COUNT event(s) to {args.events_topic}; publishing the "
          "same file again is a no-op for the engine")
    return 0
