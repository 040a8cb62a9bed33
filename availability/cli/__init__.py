"""The `availability` console script: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from availability_contracts.errors import AvailabilityError
from availability_contracts.topics import TopicNames

DEFAULT_BROKERS = "127.0.0.1:9092"


class CommandError(AvailabilityError):
    """A failure to report to the user as one line, with a non-zero exit."""

    code = "command"


def default_brokers() -> str:
    return os.environ.get("AVAILABILITY_BROKERS", DEFAULT_BROKERS)


def add_brokers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--brokers",
        default=default_brokers(),
        help="Kafka bootstrap servers (default: $AVAILABILITY_BROKERS, else %(default)s)",
    )


def add_topic_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TopicNames()
    group = parser.add_argument_group("topic names")
    group.add_argument("--events-topic", default=defaults.events, help="(default: %(default)s)")
    group.add_argument("--dlq-topic", default=defaults.dlq, help="(default: %(default)s)")
    group.add_argument("--positions-topic", default=defaults.positions,
                       help="compacted position snapshots (default: %(default)s)")
    group.add_argument("--channels-topic", default=defaults.channels,
                       help="compacted channel snapshots (default: %(default)s)")


def topic_names(args: argparse.Namespace) -> TopicNames:
    """The topics named by :func:`add_topic_arguments`' options."""
    return TopicNames(args.events_topic, args.dlq_topic, args.positions_topic,
                      args.channels_topic)


def build_parser() -> argparse.ArgumentParser:
    from availability.cli import (
        api,
        bootstrap,
        demo,
        engine,
        kafka,
        produce,
        query,
        reconcile,
        topics,
    )

    parser = argparse.ArgumentParser(
        prog="availability",
        description=(
            "Inventory availability engine: folds inventory events from Kafka into "
            "per-SKU/location and per-channel available-to-sell, publishes snapshots "
            "to compacted topics and serves them over gRPC."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (kafka, topics, produce, engine, api, query, demo, bootstrap, reconcile):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except CommandError as exc:
        print(f"availability {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
