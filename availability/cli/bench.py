"""`availability bench <scenario>`: the benchmarks of DESIGN 9 (see benchmarks/cli.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from benchmarks.cli import add_arguments

    parser = sub.add_parser(
        "bench",
        help="run a benchmark scenario: drain, freshness, grpc, recovery or all",
        description=(
            "Benchmarks on the real broker, each against a peer or baseline measured in "
            "the same run (DESIGN 9): drain (engine vs a hand-written confluent-kafka loop "
            "and Quix Streams), freshness (produce-to-snapshot latency), grpc (replica "
            "read latency and batch throughput) and recovery (kill -9, restart, catch-up). "
            "Results: JSON, markdown and PNG charts under benchmarks/results/<time>/. "
            "--smoke runs tiny sizes (what the test suite does)."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from benchmarks.cli import run

    return run(args)
