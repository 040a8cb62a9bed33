"""`availability engine`: run the availability dataflow."""

from __future__ import annotations

import argparse
from pathlib import Path

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
from availability_contracts.times import HOUR_MS, MINUTE_MS
from availability_kafka.config import KafkaConnection
from dataflows.settings import EngineSettings

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
                        help="Bytewax processes on this host; the events topic's partition "
                             "count must be divisible by it")
    add_brokers_argument(parser)
    from availability.cli.registry_options import add_registry_arguments
    add_registry_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                        help="max messages read per partition poll")
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
                        help="Prometheus /metrics port of process 0 (process i: port + i); "
                             "0 turns it off")
    add_topic_arguments(parser)
    parser.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--addresses", default=None, help=argparse.SUPPRESS)
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
    )


def run(args: argparse.Namespace) -> int:

    from availability_domain.rules import RulesError, load_rules
    from dataflows.runner import ensure_recovery_dir, member_command, run_cluster
    from dataflows.state_dir import RecoveryDir, StateDirError

    try:
        load_rules(args.rules)
    except RulesError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"cannot read rules file {args.rules}: {exc}") from exc
    if args.processes < 1:
        raise CommandError("--processes must be at least 1")
    if args.dedupe_horizon_hours <= 0 or args.lateness_horizon_hours <= 0:
        raise CommandError("horizons must be positive")
    if args.max_future_skew_minutes < 0:
        raise CommandError("--max-future-skew-minutes must be >= 0")
    settings = settings_from_args(args)

    if args.process_id is not None:
        return _run_member(settings, args.process_id, args.addresses.split(";"))

    metadata = reach_kafka(KafkaConnection.of(settings.brokers))
    topic = metadata.topics.get(settings.topics.events)
    if topic is None or topic.error is not None:
        raise CommandError(f"topic {settings.topics.events!r} not found on {args.brokers}; "
                           "run `availability topics create`")
    if len(topic.partitions) % args.processes:
        raise CommandError(
            f"{settings.topics.events} has {len(topic.partitions)} partitions, not divisible "
            f"by --processes {args.processes} (a process with fewer partitions stalls)"
        )
    register_registry_contracts(args, settings.topics, ENGINE_WRITES)
    try:
        RecoveryDir(args.recovery_dir).check_writable()
        created = ensure_recovery_dir(args.recovery_dir, max(args.processes, 1))
    except StateDirError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"cannot prepare recovery dir {args.recovery_dir}: "
                           f"{exc.strerror or exc}") from exc
    print(f"engine: recovery {'created' if created else 'resumed'} at {args.recovery_dir}; "
          f"{args.processes} process(es); reading {settings.topics.events} on {args.brokers}",
          flush=True)
    if args.processes == 1:
        return _run_member(settings)
    argv = [*member_command(), *_member_args(args)]
    code = run_cluster(argv, args.processes, args.rules)
    if code == 0:
        _restart_if_reload_requested()
    return code


def _run_member(settings: EngineSettings, process_id: int | None = None,
                addresses: list[str] | None = None) -> int:
    from dataflows.runner import run_member
    from dataflows.state_dir import StateDirError

    try:
        run_member(settings, process_id, addresses)
    except StateDirError as exc:
        raise CommandError(str(exc)) from exc
    except KeyboardInterrupt:
        print("engine: aborted", flush=True)
        return 130
    print("engine: stopped cleanly", flush=True)
    if process_id is None:
        _restart_if_reload_requested()
    return 0


def _restart_if_reload_requested() -> None:
    """After a SIGHUP reload's clean stop: the same command again, in this process."""
    import os
    import sys

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
    ]
    return argv + registry_member_args(args)
