"""`availability demo`: the main job, a replayed retail day on the real engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from availability.cli import CommandError, add_brokers_argument, add_topic_arguments, topic_names

REPO = Path(__file__).resolve().parents[2]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="the main job: Kafka, topics, engine and a replayed retail day, live",
        description=(
            "Start what is missing (the local Kafka broker, the topics), run the engine "
            "as a 2-process cluster and replay a retail day with a flash sale at a "
            "watchable speed, showing events/s, produce-to-snapshot freshness, dead "
            "letters and hot SKUs' channel numbers live. After the replay the engine and "
            "the API keep running so you can ask the API yourself (the commands are "
            "printed) until Ctrl-C, or for --linger seconds. Ctrl-C stops the engine and "
            "the API it started (exit code 130); the local Kafka broker keeps running, "
            "and the demo says how to stop it. Running it again resumes the same engine "
            "state."
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
    parser.add_argument("--http-port", type=int, default=8080,
                        help="HTTP/JSON port of the replica (0: off)")
    parser.add_argument("--api-metrics-port", type=int, default=9190,
                        help="Prometheus port of the replica (0: off)")
    parser.add_argument("--engine-metrics-port", type=int, default=9108,
                        help="Prometheus port of engine process 0 (process i: port + i; 0: off)")
    parser.add_argument("--kafka-port", type=int, default=None,
                        help="port of the local broker the demo starts (default: "
                             "$AVAILABILITY_KAFKA_PORT, else 9092)")
    parser.add_argument("--linger", type=float, default=None,
                        help="seconds to keep the engine and API up after the replay "
                             "(default: until Ctrl-C on a terminal, 0 otherwise)")
    add_brokers_argument(parser)
    add_topic_arguments(parser)
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
    started_kafka = False
    if not args.no_local_kafka:
        overrides = {"port": args.kafka_port} if args.kafka_port else {}
        try:
            local = LocalKafka(Settings.from_env(**overrides), progress=console.print)
            started_kafka = not local.status().ok
            brokers = local.start()
        except LocalKafkaError as exc:
            raise CommandError(str(exc)) from exc
    linger = args.linger if args.linger is not None else (
        float("inf") if sys.stdin.isatty() else 0.0)
    settings = DemoSettings(brokers=brokers, rules=args.rules, state_dir=args.state_dir,
                            duration_s=args.duration, rate=args.rate,
                            processes=args.processes, api_port=args.api_port,
                            topics=topic_names(args), kafka_config=args.kafka_config,
                            api_metrics_port=args.api_metrics_port,
                            http_port=args.http_port,
                            engine_metrics_port=args.engine_metrics_port, linger_s=linger,
                            local_kafka=not args.no_local_kafka, started_kafka=started_kafka)
    return run_demo(settings, console)
