"""`availability demo`: the main job, a replayed retail day on the real engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from availability.cli import CommandError, add_brokers_argument

REPO = Path(__file__).resolve().parents[2]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="the main job: Kafka, topics, engine and a replayed retail day, live",
        description=(
            "Start what is missing (the local Kafka broker, the topics), run the engine "
            "as a 2-process cluster and replay a retail day with a flash sale at a "
            "watchable speed, showing events/s, produce-to-snapshot freshness, dead "
            "letters and hot SKUs' channel numbers live. Ctrl-C stops everything it "
            "started. Running it again resumes the same engine state."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of replay")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="regular events per second (the flash sale adds 9x on hot SKUs)")
    parser.add_argument("--rules", type=Path, default=REPO / "examples" / "rules.toml")
    parser.add_argument("--state-dir", type=Path, default=REPO / "var" / "demo",
                        help="engine recovery state and logs")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--api-port", type=int, default=50051, help="gRPC port of the replica")
    add_brokers_argument(parser)
    parser.add_argument("--no-local-kafka", action="store_true",
                        help="do not start the local broker; use --brokers as it is")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from availability.demo import DemoSettings, run_demo
    from availability.local_kafka.broker import LocalKafka, LocalKafkaError, Settings

    if args.duration <= 0 or args.rate <= 0:
        raise CommandError("--duration and --rate must be positive")
    if not args.rules.is_file():
        raise CommandError(f"no such rules file: {args.rules}")
    console = Console()
    brokers = args.brokers
    if not args.no_local_kafka:
        try:
            brokers = LocalKafka(Settings.from_env(), progress=console.print).start()
        except LocalKafkaError as exc:
            raise CommandError(str(exc)) from exc
    settings = DemoSettings(brokers=brokers, rules=args.rules, state_dir=args.state_dir,
                            duration_s=args.duration, rate=args.rate,
                            processes=args.processes, api_port=args.api_port)
    return run_demo(settings, console)
