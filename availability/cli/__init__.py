"""The `availability` console script: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from availability_contracts.errors import AvailabilityError
from availability_contracts.topics import TopicNames
from availability_kafka.config import KafkaConnection

DEFAULT_BROKERS = "127.0.0.1:9092"


class CommandError(AvailabilityError):
    """A failure to report to the user as one line, with a non-zero exit."""

    code = "command"


def default_brokers() -> str:
    return os.environ.get("AVAILABILITY_BROKERS", DEFAULT_BROKERS)


def add_brokers_argument(parser: argparse.ArgumentParser) -> None:
    """``--brokers`` and ``--kafka-config``: where Kafka is and how to connect to it."""
    parser.add_argument(
        "--brokers",
        default=default_brokers(),
        help="Kafka bootstrap servers (default: $AVAILABILITY_BROKERS, else %(default)s)",
    )
    parser.add_argument(
        "--kafka-config", type=Path, default=None, metavar="FILE",
        help="properties file of librdkafka client settings (security.protocol, "
             "sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, ...) for a "
             "secured or managed Kafka (default: $AVAILABILITY_KAFKA_CONFIG, else none)",
    )


def kafka_connection(args: argparse.Namespace, *, reach: bool = False) -> KafkaConnection:
    """The brokers and client settings the command's options name; with ``reach``, also
    checked against the cluster once, so a wrong password is one clear line."""
    from availability_kafka.config import (
        KafkaConfigError,
        check_with_librdkafka,
        load_kafka_config,
    )

    connection: KafkaConnection | None = getattr(args, "_kafka_connection", None)
    if connection is None:
        try:
            connection = load_kafka_config(args.kafka_config, args.brokers,
                                           check_with_librdkafka)
        except KafkaConfigError as exc:
            raise CommandError(str(exc)) from None
        args._kafka_connection = connection
    if reach and not getattr(args, "_kafka_reached", False):
        reach_kafka(connection)
        args._kafka_reached = True
    return connection


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


def reach_kafka(connection: KafkaConnection, timeout: float = 15) -> Any:
    """The cluster's metadata, or one line saying why it cannot be had: a refused login
    names the brokers, the mechanism and the user, never the password."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    refused: list[str] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                            KafkaError._SSL):
            refused.append(error.str())

    quiet = logging.getLogger("availability.cli.librdkafka")
    if not quiet.handlers:  # librdkafka's own log lines would repeat the error, unasked
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
    admin = AdminClient(connection.client({"error_cb": on_error, "logger": quiet}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_topics(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: a refused login is known by now
            if refused:
                raise CommandError(f"cannot connect to {connection.describe()}: "
                                   f"{refused[0]}") from None
            if time.monotonic() >= deadline:
                raise CommandError(f"cannot reach Kafka at {connection.describe()}: "
                                   f"{exc.args[0].str() if exc.args else exc}") from None


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
