"""The `availability` console script: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

DEFAULT_BROKERS = "127.0.0.1:9092"


class CommandError(Exception):
    """A failure to report to the user as one line, with a non-zero exit."""


def default_brokers() -> str:
    return os.environ.get("AVAILABILITY_BROKERS", DEFAULT_BROKERS)


def add_brokers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--brokers",
        default=default_brokers(),
        help="Kafka bootstrap servers (default: $AVAILABILITY_BROKERS, else %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    from availability.cli import (
        api,
        bench,
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
    for module in (kafka, topics, produce, engine, api, query, demo, bootstrap, reconcile,
                   bench):
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
