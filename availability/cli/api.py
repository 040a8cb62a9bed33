"""`availability api`: run a gRPC read replica."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from availability.cli import CommandError, add_brokers_argument, add_topic_arguments, topic_names
from availability_api.settings import ApiSettings

DEFAULTS = ApiSettings.defaults()

if TYPE_CHECKING:  # imported lazily: `availability --help` need not load grpc
    from availability_api.server import ApiServer


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "api",
        help="run a gRPC read replica (availability.v1.AvailabilityService)",
        description=(
            "Tail the compacted snapshot topics into a local RocksDB under --data-dir and "
            "serve availability.v1.AvailabilityService from it, with grpc.health.v1 and "
            "server reflection. Offsets are stored with the data, so a restart resumes "
            "where it stopped; run as many replicas as you like, each with its own "
            "--data-dir (a data dir another replica holds is refused, naming its pid). "
            "Health is NOT_SERVING until the replica has caught up with the "
            "topics. SIGTERM/SIGINT: NOT_SERVING, drain, then stop cleanly (a second "
            "signal stops at once)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, type=Path,
                        help="the replica's RocksDB (created on first run; one replica "
                             "at a time)")
    parser.add_argument("--port", type=int, default=DEFAULTS.port,
                        help="gRPC port (0: any free one)")
    parser.add_argument("--host", default=DEFAULTS.host, help="address to listen on")
    add_brokers_argument(parser)
    parser.add_argument("--schema-registry", default=None,
                        help="Confluent Schema Registry URL (default: plain Avro)")
    add_topic_arguments(parser)
    tls = parser.add_argument_group("TLS (optional)")
    tls.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM)")
    tls.add_argument("--tls-key", type=Path, default=None, help="server private key (PEM)")
    tls.add_argument("--tls-client-ca", type=Path, default=None,
                     help="CA of client certificates: turns on mutual TLS")
    parser.add_argument("--metrics-port", type=int, default=9109,
                        help="Prometheus /metrics port; 0 turns it off")
    parser.add_argument("--drain-seconds", type=float, default=DEFAULTS.drain_seconds,
                        help="on shutdown, seconds answered as NOT_SERVING before stopping")
    parser.add_argument("--grace-seconds", type=float, default=DEFAULTS.grace_seconds,
                        help="on shutdown, seconds in-flight calls get to finish")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from availability_api.credentials import TlsError, server_tls
    from availability_api.server import ApiServer
    from availability_api.store import StoreError

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port {args.port} is not a TCP port")
    try:
        tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
    except TlsError as exc:
        raise CommandError(str(exc)) from exc
    settings = ApiSettings(
        data_dir=args.data_dir, brokers=args.brokers, topics=topic_names(args),
        host=args.host, port=args.port, tls=tls, schema_registry=args.schema_registry,
        drain_seconds=args.drain_seconds, grace_seconds=args.grace_seconds,
        metrics_port=args.metrics_port,
    )
    try:
        return asyncio.run(_serve(ApiServer(settings)))
    except (StoreError, TlsError, OSError) as exc:
        raise CommandError(str(exc)) from exc


async def _serve(server: ApiServer) -> int:
    """Serve until SIGTERM/SIGINT, then drain; the process exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logging.getLogger("availability.api").warning("second signal: stopping now")
            os._exit(128 + signum)
        logging.getLogger("availability.api").info(
            "%s: shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return await server.serve(stop)
