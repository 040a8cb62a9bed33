"""`availability engine`: run the availability dataflow."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from availability.cli import (
    CommandError,
    add_brokers_argument,
    add_topic_arguments,
    kafka_connection,
    reach_kafka,
    topic_names,
)
from availability.cli.registry_options import (
    ENGINE_WRITES,
    register_registry_contracts,
    registry_member_args,
    registry_settings,
)
from availability_contracts import hot_codec
from availability_contracts.times import HOUR_MS, MINUTE_MS
from availability_kafka.config import KafkaConnection
from dataflows import snapshot_output
from dataflows.cluster import EXIT_PEER_LOST
from dataflows.settings import EngineSettings

CODEC_NOTE = (
    f"Avro codec: {hot_codec.IMPLEMENTATION}, domain core: {snapshot_output.IMPLEMENTATION}" + (
        "" if hot_codec.IMPLEMENTATION == snapshot_output.IMPLEMENTATION == "compiled"
        else " (pure Python: slower; AVAILABILITY_PURE_PYTHON is set or native/ was not built)"))

if TYPE_CHECKING:
    from dataflows.runner import Membership

DEFAULTS = EngineSettings.defaults()


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "engine",
        help="run the availability dataflow",
        description=(
            "Fold inventory events into position and channel availability and publish "
            "changed snapshots to the compacted topics. Recovery is on: state and input "
            "offsets are snapshotted into --recovery-dir every epoch, so a restart after "
            "a crash resumes as if every event was applied exactly once. SIGINT/SIGTERM "
            "stop it cleanly. SIGHUP reloads --rules: a file that does not load is refused "
            "and the engine runs on; a changed one makes the engine stop cleanly and start "
            "again in the same process, republishing every number the change affects."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rules", required=True, type=Path,
                        help="TOML file of locations, safety stock and channels")
    parser.add_argument("--recovery-dir", required=True, type=Path,
                        help="Bytewax recovery partitions (created on first run)")
    parser.add_argument("--processes", type=int, default=1,
                        help="Bytewax processes on this host (the one-host shortcut for a "
                             "cluster); the events topic's partition count must be "
                             "divisible by it")
    cluster = parser.add_argument_group(
        "members on several hosts",
        "Run one `availability engine` per member, each with its --process-id and the "
        "same --addresses. Each member listens on its address's port (Bytewax) and the "
        "next port (the start-up check: members compare their addresses, rules, topics "
        "and recovery partitions, and all refuse to start if they differ). Each member's "
        "--recovery-dir may be its own volume or one shared volume; a fresh cluster "
        "creates --recovery-partitions partitions spread over the members. A member that "
        "loses a peer exits with status 3: start every member again and the cluster "
        "resumes from its recovery snapshots.")
    cluster.add_argument("--process-id", type=int,
                         default=os.environ.get("AVAILABILITY_PROCESS_ID") or None,
                         help="this member's position in --addresses, from 0 "
                              "(default: $AVAILABILITY_PROCESS_ID)")
    cluster.add_argument("--addresses", default=os.environ.get("AVAILABILITY_ADDRESSES"),
                         help="every member's host:port, ';'-separated, the same list and "
                              "order on every member (default: $AVAILABILITY_ADDRESSES)")
    cluster.add_argument("--recovery-partitions", type=int, default=None,
                         help="partitions of a new recovery store (default: 8 per "
                              "member: a restart reads fewer keys per partition, faster); "
                              "fixed once created: at least the largest member count the "
                              "cluster may grow to")
    add_brokers_argument(parser)
    from availability.cli.registry_options import add_registry_arguments
    add_registry_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                        help="max messages read per partition poll (a bigger batch folds more of a "
                             "SKU's events per call when there is a backlog)")
    parser.add_argument("--epoch-interval", type=float, default=DEFAULTS.epoch_interval_s,
                        help="seconds between recovery snapshots")
    parser.add_argument("--dedupe-horizon-hours", type=float,
                        default=DEFAULTS.dedupe_horizon_ms / HOUR_MS,
                        help="event-time horizon of event_id deduplication")
    parser.add_argument("--lateness-horizon-hours", type=float,
                        default=DEFAULTS.lateness_horizon_ms / HOUR_MS,
                        help="event-time horizon for re-basing a late COUNT")
    parser.add_argument("--max-future-skew-minutes", type=float,
                        default=DEFAULTS.max_future_skew_ms / MINUTE_MS,
                        help="an event dated further ahead of this engine's clock goes to "
                             "the dead-letter topic (a source with a broken clock must not "
                             "move a SKU's horizons)")
    parser.add_argument("--metrics-host", default=DEFAULTS.metrics_host,
                        help="address the metrics endpoint binds to")
    parser.add_argument("--metrics-port", type=int, default=DEFAULTS.metrics_port,
                        help="Prometheus /metrics port; with --processes, process i serves "
                             "port + i (a member started with --addresses serves the port "
                             "itself); 0 turns it off")
    add_topic_arguments(parser)
    parser.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> EngineSettings:
    return EngineSettings(
        brokers=kafka_connection(args),
        rules_path=args.rules,
        recovery_dir=args.recovery_dir,
        topics=topic_names(args),
        schema_registry=registry_settings(args),
        batch_size=args.batch_size,
        epoch_interval_s=args.epoch_interval,
        dedupe_horizon_ms=int(args.dedupe_horizon_hours * HOUR_MS),
        lateness_horizon_ms=int(args.lateness_horizon_hours * HOUR_MS),
        max_future_skew_ms=int(args.max_future_skew_minutes * MINUTE_MS),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        recovery_partitions=args.recovery_partitions,
    )


def run(args: argparse.Namespace) -> int:

    from availability_domain.rules import RulesError, load_rules
    from dataflows.cluster import ClusterError, ClusterSpec
    from dataflows.runner import Membership, member_command, run_cluster
    from dataflows.state_dir import RecoveryDir, StateDirError

    try:
        load_rules(args.rules)
    except RulesError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"cannot read rules file {args.rules}: {exc}") from exc
    if args.processes < 1:
        raise CommandError("--processes must be at least 1")
    if args.recovery_partitions is not None and args.recovery_partitions < 1:
        raise CommandError("--recovery-partitions must be at least 1")
    if args.dedupe_horizon_hours <= 0 or args.lateness_horizon_hours <= 0:
        raise CommandError("horizons must be positive")
    if args.max_future_skew_minutes < 0:
        raise CommandError("--max-future-skew-minutes must be >= 0")
    spec = None
    if args.process_id is not None or args.addresses is not None:
        if args.process_id is None or args.addresses is None:
            raise CommandError("a cluster member needs both --process-id and --addresses "
                               "(or $AVAILABILITY_PROCESS_ID and $AVAILABILITY_ADDRESSES)")
        if args.processes != 1:
            raise CommandError("--processes starts members on this host; with --process-id "
                               "and --addresses start each member yourself (not both)")
        try:
            spec = ClusterSpec.parse(args.process_id, args.addresses)
        except ClusterError as exc:
            raise CommandError(str(exc)) from exc
    settings = settings_from_args(args)
    members = spec.members if spec is not None else args.processes

    metadata = reach_kafka(KafkaConnection.of(settings.brokers))
    topic = metadata.topics.get(settings.topics.events)
    if topic is None or topic.error is not None:
        raise CommandError(f"topic {settings.topics.events!r} not found on {args.brokers}; "
                           "run `availability topics create`")
    partitions = len(topic.partitions)
    if partitions % members:
        what = "members in --addresses" if spec is not None else "--processes"
        raise CommandError(
            f"{settings.topics.events} has {partitions} partitions, not divisible "
            f"by the {members} {what} (a process with fewer partitions stalls)"
        )
    kafka_cluster = str(getattr(metadata, "cluster_id", "") or "")
    if spec is not None and args.supervised:
        return _run_member(settings, Membership(spec, partitions, kafka_cluster,
                                                supervised=True))
    register_registry_contracts(args, settings.topics, ENGINE_WRITES)
    try:
        RecoveryDir(args.recovery_dir).check_writable()
        fresh = not RecoveryDir(args.recovery_dir).partitions()
    except StateDirError as exc:
        raise CommandError(str(exc)) from exc
    if spec is not None:
        print(f"engine: member {spec.process_id} of {spec.members}; recovery dir "
              f"{args.recovery_dir}; reading {settings.topics.events} on {args.brokers}; "
              f"start-up check on port {spec.check_address(spec.process_id)[1]}; "
              f"{CODEC_NOTE}", flush=True)
        return _run_member(settings, Membership(spec, partitions, kafka_cluster))
    print(f"engine: recovery {'created' if fresh else 'resumed'} at {args.recovery_dir}; "
          f"{args.processes} process(es); reading {settings.topics.events} on {args.brokers}; "
          f"{CODEC_NOTE}", flush=True)
    if args.processes == 1:
        return _run_member(settings)
    argv = [*member_command(), *_member_args(args)]
    code = run_cluster(argv, args.processes, args.rules)
    if code == 0:
        _restart_if_reload_requested()
    return code


def _run_member(settings: EngineSettings, membership: Membership | None = None) -> int:
    from dataflows.cluster import CheckStopped, ClusterError
    from dataflows.runner import PeerLost, run_member
    from dataflows.state_dir import StateDirError

    try:
        run_member(settings, membership)
    except PeerLost as exc:
        print(f"availability engine: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_PEER_LOST
    except CheckStopped as exc:
        print(f"engine: {exc}", flush=True)
        return 0
    except (StateDirError, ClusterError) as exc:
        raise CommandError(str(exc)) from exc
    except KeyboardInterrupt:
        print("engine: aborted", flush=True)
        return 130
    print("engine: stopped cleanly", flush=True)
    if membership is None or not membership.supervised:
        _restart_if_reload_requested()
    return 0


def _restart_if_reload_requested() -> None:
    """After a SIGHUP reload's clean stop: the same command again, in this process."""
    from dataflows.runner import RELOAD_REQUESTED, member_command

    if RELOAD_REQUESTED.is_set():
        sys.stdout.flush()
        sys.stderr.flush()
        command = member_command()
        os.execv(command[0], [*command, *sys.argv[1:]])


def _member_args(args: argparse.Namespace) -> list[str]:
    """The parent's options, passed on to each cluster member."""
    argv = [
        "engine", "--rules", str(args.rules), "--recovery-dir", str(args.recovery_dir),
        "--brokers", args.brokers, "--batch-size", str(args.batch_size),
        *(["--kafka-config", str(args.kafka_config)] if args.kafka_config else []),
        "--epoch-interval", str(args.epoch_interval),
        "--dedupe-horizon-hours", str(args.dedupe_horizon_hours),
        "--lateness-horizon-hours", str(args.lateness_horizon_hours),
        "--max-future-skew-minutes", str(args.max_future_skew_minutes),
        "--events-topic", args.events_topic, "--dlq-topic", args.dlq_topic,
        "--positions-topic", args.positions_topic, "--channels-topic", args.channels_topic,
        "--metrics-port", str(args.metrics_port), "--metrics-host", args.metrics_host,
        *(["--recovery-partitions", str(args.recovery_partitions)]
          if args.recovery_partitions else []),
    ]
    return argv + registry_member_args(args)
