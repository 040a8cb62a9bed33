"""`availability query`: ask a running API replica and print a table for humans."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from availability.cli import CommandError

if TYPE_CHECKING:  # imported lazily: `availability --help` need not load grpc
    from availability_api.client import AvailabilityClient


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "query",
        help="ask the gRPC API for channel availability or positions, print a table",
        description=(
            "Ask a running `availability api` replica and print what it answers: the "
            "channel number of each --sku (with the locations it is made of), and with "
            "--positions the stock positions of each SKU. Times are UTC."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--channel", default=None,
                        help="channel to ask (e.g. web); optional with --positions")
    parser.add_argument("--sku", action="append", required=True, dest="skus",
                        help="SKU to look up; repeat for several")
    parser.add_argument("--location", default="",
                        help="store of a per-location channel (e.g. pickup)")
    parser.add_argument("--positions", action="store_true",
                        help="also list each SKU's stock positions")
    parser.add_argument("--target", default="127.0.0.1:50051", help="API host:port")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline per call, s")
    tls = parser.add_argument_group("TLS (optional)")
    tls.add_argument("--tls", action="store_true", help="use TLS with the system CAs")
    tls.add_argument("--tls-ca", type=Path, default=None, help="CA of the server certificate")
    tls.add_argument("--tls-cert", type=Path, default=None,
                     help="client certificate (mutual TLS)")
    tls.add_argument("--tls-key", type=Path, default=None, help="client private key")
    parser.set_defaults(run=run)


def _time(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(header: Sequence[str], rows: Sequence[Sequence[object]],
          numeric: frozenset[int] = frozenset()) -> str:
    """Aligned plain-text table; columns in ``numeric`` are right-aligned."""
    cells = [list(header), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        lines.append("  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
                     .rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from availability_api.client import ApiError, AvailabilityClient
    from availability_api.credentials import TlsError

    if not args.channel and not args.positions:
        raise CommandError("give --channel, --positions, or both")
    try:
        client = AvailabilityClient(args.target, timeout=args.timeout, tls=args.tls,
                                    tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                                    tls_key=args.tls_key)
    except TlsError as exc:
        raise CommandError(str(exc)) from exc
    blocks: list[str] = []
    try:
        with client:
            if args.channel:
                blocks.append(_channel_block(client, args.channel, args.skus, args.location))
            if args.positions:
                blocks.extend(_positions_block(client, sku) for sku in args.skus)
    except ApiError as exc:
        raise CommandError(f"{args.target}: {exc}") from exc
    print("\n\n".join(blocks))
    return 0


def _channel_block(client: AvailabilityClient, channel: str, skus: list[str], location: str) -> str:
    answer = client.batch_get(channel, skus, location)
    rows = [
        (value.sku, value.location_id or "(pooled)", value.ats if value.found else "-",
         "yes" if value.found else "no", value.version or "-", _time(value.as_of),
         _time(value.computed_at),
         " ".join(f"{c.location_id}={c.ats}" + (f"+{c.in_transit}t" if c.in_transit else "")
                  for c in value.locations) or "-")
        for value in answer.results
    ]
    header = ("sku", "location", "ats", "found", "version", "as_of (UTC)", "computed_at (UTC)",
              "from locations (ats)")
    return (f"channel {channel}  (replica lag: {answer.replica_lag} records)\n"
            + table(header, rows, numeric=frozenset({2, 4})))


def _positions_block(client: AvailabilityClient, sku: str) -> str:
    answer = client.list_positions(sku)
    if not answer.positions:
        return f"positions of {sku}: none"
    rows = [(p.location_id, p.on_hand, p.unsellable, p.reserved, p.in_transit,
             p.safety_stock, p.ats, p.version, _time(p.as_of)) for p in answer.positions]
    header = ("location", "on_hand", "unsellable", "reserved", "in_transit", "safety",
              "ats", "version", "as_of (UTC)")
    return (f"positions of {sku}  (replica lag: {answer.replica_lag} records)\n"
            + table(header, rows, numeric=frozenset(range(1, 8))))
