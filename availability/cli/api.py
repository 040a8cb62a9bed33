"""`availability api`: run a read replica (gRPC, and HTTP/JSON on --http-port)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from availability.cli import (
    CommandError,
    add_brokers_argument,
    add_topic_arguments,
    kafka_connection,
    topic_names,
)
from availability.cli.registry_options import registry_settings
from availability_api.settings import ApiSettings

DEFAULTS = ApiSettings.defaults()

if TYPE_CHECKING:  # imported lazily: `availability --help` need not load grpc
    from availability_api.server import ApiServer


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "api",
        help="run a read replica: gRPC (availability.v1.AvailabilityService) and "
             "HTTP/JSON",
        description=(
            "Tail the compacted snapshot topics into a local RocksDB under --data-dir and "
            "serve availability.v1.AvailabilityService from it, with grpc.health.v1 and "
            "server reflection (v1 and v1alpha), and the same reads as HTTP/JSON on "
            "--http-port (GET /v1/availability/{channel}/{sku}, POST "
            "/v1/availability/{channel}:batchGet, GET /v1/positions/{sku}, server-sent "
            "events on GET /v1/availability/{channel}/stream?sku=..., /healthz, /readyz). "
            "Offsets are stored with the data, so a restart resumes "
            "where it stopped; run as many replicas as you like, each with its own "
            "--data-dir (a data dir another replica holds is refused, naming its pid). "
            "Health is NOT_SERVING (/readyz 503) until the replica has caught up with the "
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
    parser.add_argument("--host", default=DEFAULTS.host,
                        help="address of the gRPC port ([::]: every interface)")
    parser.add_argument("--http-port", type=int, default=DEFAULTS.http_port,
                        help="HTTP/JSON port; 0 turns it off")
    parser.add_argument("--http-host", default=argparse.SUPPRESS,
                        help="address of the HTTP/JSON port (default: the --host address)")
    add_brokers_argument(parser)
    from availability.cli.registry_options import add_registry_arguments
    add_registry_arguments(parser)
    add_topic_arguments(parser)
    tls = parser.add_argument_group("TLS (optional; secures the gRPC and the HTTP port)")
    tls.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM)")
    tls.add_argument("--tls-key", type=Path, default=None, help="server private key (PEM)")
    tls.add_argument("--tls-client-ca", type=Path, default=None,
                     help="CA of client certificates: turns on mutual TLS")
    parser.add_argument("--metrics-port", type=int, default=DEFAULTS.metrics_port,
                        help="Prometheus /metrics port (the engine's are 9108 + process "
                             "index); 0 turns it off")
    parser.add_argument("--metrics-host", default=DEFAULTS.metrics_host,
                        help="address of the /metrics port (0.0.0.0: every interface)")
    parser.add_argument("--channels-in-memory", action=argparse.BooleanOptionalAction,
                        default=DEFAULTS.channels_in_memory,
                        help="keep every channel answer in memory as well as in RocksDB, "
                             "so Get and BatchGet read a dict (many times faster per key); "
                             "the start-up log gives its size. Turn it off when the "
                             "channel answers do not fit in RAM")
    parser.add_argument("--drain-seconds", type=float, default=DEFAULTS.drain_seconds,
                        help="on shutdown, seconds answered as NOT_SERVING (/readyz 503) "
                             "before stopping")
    parser.add_argument("--grace-seconds", type=float, default=DEFAULTS.grace_seconds,
                        help="on shutdown, seconds in-flight calls and HTTP requests get "
                             "to finish")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from availability_api.credentials import TlsError, server_tls
    from availability_api.server import ApiServer
    from availability_api.store import StoreError

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    for option, port in (("--port", args.port), ("--http-port", args.http_port),
                         ("--metrics-port", args.metrics_port)):
        if not 0 <= port <= 65535:
            raise CommandError(f"{option} {port} is not a TCP port")
    try:
        tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
    except TlsError as exc:
        raise CommandError(str(exc)) from exc
    settings = ApiSettings(
        data_dir=args.data_dir, brokers=kafka_connection(args, reach=True),
        topics=topic_names(args),
        host=args.host, port=args.port, tls=tls, schema_registry=registry_settings(args),
        drain_seconds=args.drain_seconds, grace_seconds=args.grace_seconds,
        http_port=args.http_port or None, http_host=getattr(args, "http_host", None),
        metrics_port=args.metrics_port, metrics_host=args.metrics_host,
        channels_in_memory=args.channels_in_memory,
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
