"""`availability topics create` (idempotent) and `availability topics describe`."""

from __future__ import annotations

import argparse
import textwrap

from confluent_kafka import KafkaException

from availability.cli import (
    CommandError,
    add_brokers_argument,
    add_topic_arguments,
    kafka_connection,
    topic_names,
)
from availability.cli.registry_options import add_registry_arguments, register_registry_contracts
from availability_contracts.errors import AvailabilityError
from availability_contracts.topics import (
    DLQ_CONFIG,
    EVENTS_CONFIG,
    ROLE_GROUPS,
    SNAPSHOT_CONFIG,
    ConfigOverride,
)
from availability_kafka.admin import (
    DEFAULT_REPLICATION,
    TopicState,
    create_topics,
    describe_topics,
)


def _settings(config: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in config.items())


def _listed(label: str, config: dict[str, str]) -> str:
    return textwrap.fill(_settings(config), width=88, initial_indent=f"  {label:<11}",
                         subsequent_indent=" " * 13, break_on_hyphens=False)


CREATE_EPILOG = f"""\
configs each topic is created with (docs/operations.md, "Topics"):
{_listed("events", dict(EVENTS_CONFIG))}
{_listed("dlq", dict(DLQ_CONFIG))}
{_listed("snapshots", dict(SNAPSHOT_CONFIG))}
  and every topic, when the replication factor is 3 or more: min.insync.replicas=2
  (with fewer replicas the topics take the cluster's default; one above the
  replication factor, which would fail every write, is refused)

--config [ROLE:]key=value (repeatable) adds or replaces one of these before creation.
ROLE is one of {", ".join(ROLE_GROUPS)}
("snapshots" is positions and channels); without a ROLE the setting applies to every
topic. A later --config wins over an earlier one. cleanup.policy cannot be changed.
The cluster validates every setting before anything is created: a refused one
creates nothing.

Existing topics are never altered. They are reported as "exists", with every
difference from what would have been created (partitions, replication factor,
configs); change them yourself with kafka-configs.sh --alter if you want to.

examples:
  availability topics create
  availability topics create --partitions 12 --replication-factor 3 \\
      --config events:retention.ms=2592000000 --config snapshots:segment.ms=600000
"""

DESCRIBE_EPILOG = """\
For each topic: its partitions, replication factor, the settings made on the topic
("configs") and the non-default ones it takes from the broker or cluster
configuration ("from the cluster"). Per partition: leader, replicas, in-sync
replicas, start and end offsets and end - start, which is the record count of the
delete-retention topics but an upper bound for a compacted topic (compaction leaves
gaps). --count-keys reads both compacted topics to the end and adds the records
actually there, the distinct keys and the live keys (latest record not a tombstone).
Exits 1 with one line when a topic is missing.
"""


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
        epilog=CREATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_brokers_argument(create)
    create.add_argument("--partitions", type=int, default=4,
                        help="partitions per topic; keep it divisible by engine --processes "
                             "(default: %(default)s)")
    create.add_argument("--replication-factor", type=int, default=None, metavar="N",
                        help=f"replicas per partition (default: {DEFAULT_REPLICATION} on a "
                             f"cluster of {DEFAULT_REPLICATION} or more brokers, else one "
                             "per broker); 3 or more also sets min.insync.replicas=2")
    create.add_argument("--config", action="append", default=[], metavar="[ROLE:]KEY=VALUE",
                        dest="configs",
                        help="topic config for the topics of ROLE (default: all), repeatable; "
                             "see below")
    add_topic_arguments(create)
    add_registry_arguments(create)
    create.set_defaults(run=run_create)

    describe = actions.add_parser(
        "describe",
        help="partitions, replication, configs and record counts of the four topics",
        description="Show the four topics as they are on the cluster.",
        epilog=DESCRIBE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_brokers_argument(describe)
    describe.add_argument("--count-keys", action="store_true",
                          help="read the compacted topics to count records and distinct keys")
    describe.add_argument("--scan-timeout", type=float, default=300.0, metavar="SECONDS",
                          help="give up reading a topic for --count-keys after this long "
                               "(default: %(default)s)")
    add_topic_arguments(describe)
    describe.set_defaults(run=run_describe)


def run_create(args: argparse.Namespace) -> int:
    if args.partitions < 1:
        raise CommandError("--partitions must be at least 1")
    if args.replication_factor is not None and args.replication_factor < 1:
        raise CommandError("--replication-factor must be at least 1")
    try:
        overrides = [ConfigOverride.parse(text) for text in args.configs]
    except AvailabilityError as exc:
        raise CommandError(f"--config {exc}") from None
    connection = kafka_connection(args, reach=True)
    try:
        outcomes = create_topics(connection, topic_names(args), args.partitions,
                                 args.replication_factor, overrides=overrides)
    except AvailabilityError as exc:
        raise CommandError(str(exc)) from None
    except KafkaException as exc:
        raise CommandError(f"cannot create topics on {connection.describe()}: "
                           f"{exc}") from None
    width = max(len(outcome.name) for outcome in outcomes)
    for outcome in outcomes:
        state = "created" if outcome.created else "exists"
        print(f"{outcome.name:<{width}}  {state:<7}  partitions={outcome.partitions} "
              f"replication-factor={outcome.replication_factor}")
        for difference in outcome.differences:
            print(f"{'':<{width}}  differs: {difference}")
    if any(outcome.differences for outcome in outcomes):
        print("existing topics were left as they are; see `availability topics create "
              "--help` and docs/operations.md (Topics) to change them")
    created = [outcome for outcome in outcomes if outcome.created]
    if args.replication_factor is None and created:
        chosen = created[0].replication_factor
        note = (f"replication factor {chosen} chosen from the cluster's brokers "
                "(--replication-factor chooses it)")
        insync = created[0].min_insync
        if insync is not None:
            note += f", min.insync.replicas {insync}"
        if chosen == 1:
            note += "; one replica does not survive the loss of its broker"
        print(note)
    for done in register_registry_contracts(args, topic_names(args)):
        print(f"{done.subject}  registered  schema id {done.schema_id} ({done.schema})")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    connection = kafka_connection(args, reach=True)
    try:
        states = describe_topics(connection, topic_names(args), count_keys=args.count_keys,
                                 scan_timeout=args.scan_timeout)
    except AvailabilityError as exc:
        raise CommandError(str(exc)) from None
    except (KafkaException, TimeoutError, RuntimeError) as exc:
        raise CommandError(f"cannot describe topics on {connection.describe()}: "
                           f"{exc}") from None
    print("\n\n".join(format_state(state, args.count_keys) for state in states))
    return 0


def format_state(state: TopicState, count_keys: bool = False) -> str:
    """One topic as a block: a heading, its configs and a table of its partitions."""
    lines = [f"{state.name} ({state.role}): {len(state.partitions)} partitions, "
             f"replication factor {state.replication_factor}"]
    for label, config in (("configs", state.configs), ("from the cluster", state.inherited)):
        if config:
            lines.extend(textwrap.wrap(_settings(config), width=96,
                                       initial_indent=f"  {label}: ",
                                       subsequent_indent=" " * (len(label) + 4),
                                       break_on_hyphens=False))
    header = ["partition", "leader", "replicas", "isr", "start", "end", "end-start"]
    counted = count_keys and state.compacted
    if counted:
        header += ["records", "keys", "live keys"]
    rows: list[list[str]] = []
    for p in state.partitions:
        row: list[int | None] = [p.partition, p.leader, p.replicas, p.in_sync, p.start,
                                 p.end, p.offsets]
        if counted:
            row += [p.records, p.keys, p.live_keys]
        rows.append(["-" if value is None else str(value) for value in row])
    total = ["total", "", "", "", "", "", str(sum(p.offsets for p in state.partitions))]
    if counted:
        total += [str(sum(p.records or 0 for p in state.partitions)),
                  str(sum(p.keys or 0 for p in state.partitions)),
                  str(sum(p.live_keys or 0 for p in state.partitions))]
    rows.append(total)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for cells in [header, *rows]:
        lines.append("  " + "  ".join(cell.rjust(w) for cell, w in zip(cells, widths,
                                                                       strict=True)))
    return "\n".join(lines)
