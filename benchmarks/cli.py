"""Command line of the benchmarks, run from a checkout: ``python -m benchmarks`` or
``make bench ARGS=...``.

Each scenario runs alone from one command; ``all`` runs every one into one results
folder. When no broker answers at --brokers, the local Kafka is started for the run
and stopped afterwards (a broker that was already running is left alone).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from availability_kafka.config import ENV_VAR
from benchmarks.report import OtherCpu, ScenarioResult, results_dir

SCENARIOS = ("drain", "freshness", "grpc", "recovery", "checkpoint")
IN_PROCESS = frozenset({"checkpoint"})
"""Scenarios that need no broker."""


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The scenario subcommands, shared by both entry points."""
    sub = parser.add_subparsers(dest="scenario", metavar="SCENARIO", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--brokers", default=os.environ.get("AVAILABILITY_BROKERS",
                                                            "127.0.0.1:9092"),
                        help="Kafka bootstrap servers; a local broker is started if none "
                             "answers (default: $AVAILABILITY_BROKERS, else %(default)s)")
    common.add_argument("--kafka-config", type=Path, default=None, metavar="FILE",
                        help="librdkafka client settings for a secured Kafka, passed to every "
                             "system and client of the run (default: "
                             "$AVAILABILITY_KAFKA_CONFIG)")
    common.add_argument("--smoke", action="store_true",
                        help="tiny sizes: checks the scenario works, measures nothing useful")
    common.add_argument("--out", type=Path, default=None,
                        help="results folder (default: benchmarks/results/<UTC time>/)")

    drain = sub.add_parser("drain", parents=[common], help="backlog drain vs loop and Quix",
                           description=_doc("benchmarks.drain"))
    drain.add_argument("--events", type=int, help="backlog size (default 2,000,000)")
    drain.add_argument("--skus", type=int, help="SKUs (default 100,000)")
    drain.add_argument("--systems", type=_names,
                       help="comma list of release-1p,release-2p (the previous release), "
                            "engine-1p,engine-2p,loop,quix (default: all)")

    fresh = sub.add_parser("freshness", parents=[common],
                           help="produce-to-snapshot latency at steady rates and a burst",
                           description=_doc("benchmarks.freshness"))
    fresh.add_argument("--rates", type=_ints, help="events/s levels (default 5000,20000,50000)")
    fresh.add_argument("--seconds", type=float, help="seconds per level (default 30: three "
                       "epoch ends of the engine's default --epoch-interval)")
    fresh.add_argument("--epoch-interval", type=float, metavar="SECONDS",
                       help="the engine's --epoch-interval (default: the engine's own); "
                            "an interval longer than the run shows the latency with no "
                            "epoch end, hence no recovery snapshot, inside a level")
    fresh.add_argument("--burst-base", type=int, help="base rate of the 10x burst (default 5000)")
    fresh.add_argument("--systems", type=_names,
                       help="comma list of release-1p,release-2p (the previous release), "
                            "engine-1p,engine-2p,loop,quix (default: engine-1p,loop,quix)")

    grpc_ = sub.add_parser("grpc", parents=[common], help="gRPC Get latency and BatchGet rate",
                           description=_doc("benchmarks.grpc_load"))
    grpc_.add_argument("--rates", type=_floats, help="single Gets/s levels (default 500,1000,2000)")
    grpc_.add_argument("--concurrency", type=_ints, help="BatchGet calls in flight "
                                                         "(default 1,16,64)")
    grpc_.add_argument("--seconds", type=float, help="seconds per measurement (default 10)")
    grpc_.add_argument("--client", choices=("go", "python"),
                       help="load generator: go (compiled from benchmarks/loadgen on first "
                            "use; default) or python (grpcio in this process, which needs "
                            "about as much CPU per call as the server it measures)")

    recovery = sub.add_parser("recovery", parents=[common], help="kill -9, restart, catch-up",
                              description=_doc("benchmarks.recovery"))
    recovery.add_argument("--skus", type=int, help="SKUs (default 50,000)")
    recovery.add_argument("--locations", type=int, help="locations per SKU (default 20)")
    recovery.add_argument("--downtime", type=float, help="seconds between kill and restart "
                                                         "(default 5)")

    checkpoint = sub.add_parser("checkpoint", parents=[common],
                                help="recovery checkpoint bytes and pause by history",
                                description=_doc("benchmarks.checkpoint"))
    checkpoint.add_argument("--history", type=_ints,
                            help="events of history to measure at (default "
                                 "1000000,2000000,5000000,10000000)")
    checkpoint.add_argument("--window", type=int,
                            help="events whose changes one checkpoint writes (default 50,000)")

    sub.add_parser("all", parents=[common], help="every scenario, one results folder")


_DESCRIPTIONS = {
    "benchmarks.drain": (
        "N pre-loaded retail events (default 2M); the engine with 1 and 2 processes, the "
        "hand-written confluent-kafka loop and a Quix Streams app each drain them into "
        "fresh output topics. Drained = the latest value per key equals the in-process "
        "reference fold. Table: events/s and ratios vs the loop and Quix."),
    "benchmarks.freshness": (
        "Events produced in real time at steady rates (default 5k, 20k, 50k/s), "
        "occurred_at = produce time; per-event latency until a snapshot reflecting it is "
        "on the topic (p50/p99/max, HDR histogram), then a 10x flash-sale burst and the "
        "time until the backlog it leaves is out."),
    "benchmarks.grpc_load": (
        "An `availability api` replica loaded with realistic channel snapshots: single "
        "GetAvailability at fixed request rates (open loop, p50/p99) and "
        "BatchGetAvailability(100) throughput at 1/16/64 calls in flight, next to a bare "
        "gRPC server answering from a dict (the floor of Python gRPC here)."),
    "benchmarks.recovery": (
        "1M positions (50k SKUs x 20 locations, via COUNTs), live traffic, SIGKILL of the "
        "engine, restart: seconds until every event published before the restart is "
        "reflected in the output; compared with a cold replay by the hand loop."),
    "benchmarks.checkpoint": (
        "In process, no broker: the engine's per-SKU recovery state folded over 1M to 10M "
        "retail events; at each point one checkpoint of the same window of changes (keys, "
        "bytes written, pause) and the memory per position and per remembered event id."),
}


def _doc(module: str) -> str:
    """Static text: building the parser must not import the scenarios (slow --help)."""
    return _DESCRIPTIONS[module] + " Details: the module docstring of " + module + "."


def _options(args: argparse.Namespace, scenario: str) -> tuple[Callable[..., ScenarioResult],
                                                               object]:
    """The scenario's run function and its options (smoke or full, plus overrides)."""
    import dataclasses
    import importlib

    module_name = {"grpc": "benchmarks.grpc_load"}.get(scenario, f"benchmarks.{scenario}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SystemExit(f"benchmarks need the dev dependencies ({exc.name} is missing): "
                         "pip install -e '.[dev]'") from exc
    options_class = next(v for k, v in vars(module).items() if k.endswith("Options"))
    options = module.SMOKE if args.smoke else options_class()
    overrides = {name: getattr(args, name) for name in ("events", "skus", "systems", "rates",
                                                         "seconds", "burst_base", "concurrency",
                                                         "locations", "downtime", "history",
                                                         "window", "client",
                                                         "epoch_interval")
                 if getattr(args, name, None) is not None}
    known = {f.name for f in dataclasses.fields(options)}
    options = dataclasses.replace(options, **{k: v for k, v in overrides.items() if k in known})
    return module.run, options


@contextlib.contextmanager
def kafka(brokers: str, log: Callable[[str], None], needed: bool = True) -> Iterator[str]:
    """The broker at ``brokers``, or a local one started now and stopped after."""
    from availability.local_kafka.broker import LocalKafka, Settings, kafka_answers

    if not needed or kafka_answers(brokers, timeout=3.0):
        yield brokers
        return
    log(f"no Kafka at {brokers}: starting the local broker for this run")
    broker = LocalKafka(Settings.from_env())
    bootstrap = broker.start()
    try:
        yield bootstrap
    finally:
        broker.stop()


def run(args: argparse.Namespace) -> int:
    """Run the chosen scenario(s); print each markdown report; write results."""
    out_dir = results_dir(args.out)
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    failures = 0
    if args.kafka_config is not None:  # every system and client of the run reads it
        os.environ[ENV_VAR] = str(args.kafka_config.resolve())
    previous = _interruptible()
    try:
        with kafka(args.brokers, log, needed=not IN_PROCESS.issuperset(scenarios)) as brokers:
            for scenario in scenarios:
                run_scenario, options = _options(args, scenario)
                with OtherCpu() as others:
                    result = run_scenario(brokers, options, out_dir, smoke=args.smoke, log=log)
                result.machine["other_cpu"] = others.summary()
                result.machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
                json_path, md_path = result.write(out_dir)
                print(result.markdown(), flush=True)
                log(f"{scenario}: results in {json_path.parent} ({json_path.name}, "
                    f"{md_path.name}, {len(result.charts)} chart(s))")
                failures += bool(result.data.get("failed"))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 1 if failures else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _interruptible() -> dict[int, object]:
    """SIGTERM and SIGINT (even when inherited as ignored, e.g. under nohup &) raise
    KeyboardInterrupt, so a stopped run still stops its systems and deletes its topics."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _interrupt)
            for signum in (signal.SIGTERM, signal.SIGINT)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of the availability engine against a hand-written loop and "
                    "Quix Streams, on the real broker.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
