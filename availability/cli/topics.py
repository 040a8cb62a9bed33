"""`availability topics create`: the four topics, idempotently."""

from __future__ import annotations

import argparse

from confluent_kafka import KafkaException

from availability.cli import CommandError, add_brokers_argument, add_topic_arguments, topic_names
from availability_kafka.admin import create_topics


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("topics", help="manage the engine's Kafka topics",
                            description="Manage the engine's Kafka topics.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create the four topics (idempotent)",
        description=(
            "Create the input, dead-letter and the two compacted snapshot topics. "
            "Topics that exist already are left untouched; running it twice is safe."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_brokers_argument(create)
    create.add_argument("--partitions", type=int, default=4,
                        help="partitions per topic; keep it divisible by engine --processes")
    create.add_argument("--replication-factor", type=int, default=1)
    add_topic_arguments(create)
    create.set_defaults(run=run_create)


def run_create(args: argparse.Namespace) -> int:
    if args.partitions < 1:
        raise CommandError("--partitions must be at least 1")
    try:
        outcomes = create_topics(args.brokers, topic_names(args), args.partitions,
                                 args.replication_factor)
    except KafkaException as exc:
        raise CommandError(f"cannot create topics on {args.brokers}: {exc}") from exc
    for outcome in outcomes:
        state = "created" if outcome.created else "exists"
        print(f"{outcome.name:<28} {state:<8} partitions={outcome.partitions}")
    return 0
