"""`availability reconcile --erp-snapshot F`: drift between the ERP and the engine."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException

from availability.cli import CommandError, add_brokers_argument, kafka_connection
from availability.cli.bootstrap import describe, load_snapshot
from availability_contracts.codec import Codec, RegistryError
from availability_contracts.schemas import POSITION_SCHEMA
from availability_contracts.times import HOUR_MS
from availability_contracts.topics import TopicNames
from availability_kafka.delivery import ConfirmedProducer, DeliveryFailed
from availability_kafka.topic_reader import latest_by_key

if TYPE_CHECKING:  # imported lazily: `availability --help` need not load polars
    import polars as pl

    from availability.erp import DriftSummary



def register(sub: argparse._SubParsersAction) -> None:
    defaults = TopicNames()
    parser = sub.add_parser(
        "reconcile",
        help="compare an ERP stock snapshot with the engine's positions (drift report)",
        description=(
            "Read an ERP stock export (same format as `bootstrap`) and the engine's "
            "positions (latest snapshot per key on the compacted positions topic), compare "
            "on_hand per sku+location_id, print a summary and write the full drift table. "
            "Rule: a position whose as_of (newest event time folded) is at or before the "
            "ERP row's as_of is compared: equal is 'match', else 'drift' (drift = ERP - "
            "engine). A position that has events after the ERP time is "
            "'moved_since_snapshot' and not compared: its number at the ERP time is no "
            "longer on the topic. Keys on one side only are 'missing_in_engine' / "
            "'missing_in_erp'. Run it when the engine has caught up with its input. "
            "--emit-counts publishes the ERP number as a COUNT at the ERP time for every "
            "drifted row and every row with ERP stock but no position; the engine's as-of "
            "COUNT semantics keep any later movement on top of it."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--erp-snapshot", required=True, type=Path,
                        help="ERP export: .csv or .parquet")
    parser.add_argument("--output", type=Path, default=None,
                        help="drift table, .csv or .parquet (default: <snapshot name>.drift.csv "
                             "in the current directory)")
    parser.add_argument("--emit-counts", action="store_true",
                        help="publish COUNT corrections for drifted rows and ERP-only stock")
    parser.add_argument("--fail-on-drift", action="store_true",
                        help="exit 2 when a row drifted or ERP stock has no position (for "
                             "scheduled checks)")
    parser.add_argument("--top", type=int, default=10, help="largest drifts printed")
    add_brokers_argument(parser)
    parser.add_argument("--positions-topic", default=defaults.positions,
                        help="compacted position snapshots")
    parser.add_argument("--events-topic", default=defaults.events,
                        help="where --emit-counts publishes")
    from availability.cli.registry_options import add_registry_arguments
    add_registry_arguments(parser)
    parser.add_argument("--scan-timeout", type=float, default=300.0,
                        help="seconds allowed to read the positions topic to its end")
    parser.add_argument("--dedupe-horizon-hours", type=float, default=7 * 24,
                        help="the engine's --dedupe-horizon-hours: corrections older than "
                             "this before their SKU's newest event are flagged, as the "
                             "engine dead-letters them")
    parser.set_defaults(run=run)


def read_positions(args: argparse.Namespace, codec: Codec) -> dict[str, dict[str, Any]]:
    def decode(value: bytes) -> dict[str, Any]:
        return codec.decode(POSITION_SCHEMA, value)

    try:
        return latest_by_key(kafka_connection(args, reach=True), args.positions_topic, decode,
                             args.scan_timeout)
    except (KafkaException, RuntimeError, TimeoutError, ValueError, RegistryError) as exc:
        raise CommandError(f"cannot read {args.positions_topic} on {args.brokers}: {exc}"
                           ) from exc


def print_summary(summary: DriftSummary, largest: pl.DataFrame) -> None:
    from availability.erp import DRIFT, MATCH, MISSING_IN_ENGINE, MISSING_IN_ERP, MOVED

    status = summary.by_status
    lines = [
        ("ERP rows", summary.erp_rows, ""),
        ("engine positions", summary.engine_positions, ""),
        ("positions compared", summary.compared, "engine as_of <= ERP as_of"),
        ("  matching", status[MATCH], ""),
        ("  drifted", status[DRIFT], f"{summary.drift_units} unit(s) in total"),
        ("moved since snapshot", status[MOVED], "events after the ERP time: not compared"),
        ("missing in engine", status[MISSING_IN_ENGINE],
         f"{summary.missing_with_stock} with ERP stock > 0"),
        ("missing in ERP file", status[MISSING_IN_ERP], "position not in the file"),
    ]
    for label, count, note in lines:
        print(f"  {label:<22}{count:>10}  {note}".rstrip())
    if largest.height:
        print("largest drifts (drift = ERP - engine):")
        header = ("sku", "location_id", "erp", "engine", "drift", "erp as_of", "engine as_of")
        rows = [
            (sku, location, str(erp), str(engine), f"{drift:+d}", _iso(erp_at), _iso(engine_at))
            for sku, location, erp, engine, drift, erp_at, engine_at in largest.select(
                "sku", "location_id", "erp_on_hand", "engine_on_hand", "drift",
                "erp_as_of", "engine_as_of").iter_rows()
        ]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        for row in (header, *rows):
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print(("  " + "  ".join(cells)).rstrip())


def _iso(moment: Any) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if moment is not None else "-"


def run(args: argparse.Namespace) -> int:
    from availability.erp import (
        check_output_path,
        compare,
        largest_drifts,
        positions_frame,
        summarize,
        write_table,
    )

    output: Path = args.output or Path.cwd() / f"{args.erp_snapshot.stem}.drift.csv"
    problem = check_output_path(output)
    if problem:
        raise CommandError(problem)
    snapshot = load_snapshot(args.erp_snapshot)
    print(f"{args.erp_snapshot}: {describe(snapshot)}")
    from availability.cli.registry_options import registry_settings
    codec = Codec(registry_settings(args))
    positions = read_positions(args, codec)
    engine = positions_frame(positions)
    table = compare(snapshot, engine)
    summary = summarize(snapshot, engine, table)
    print(f"reconciled against {args.positions_topic} on {args.brokers}:")
    print_summary(summary, largest_drifts(table, args.top))
    try:
        write_table(table, output)
    except OSError as exc:
        raise CommandError(f"cannot write {output}: {exc}") from exc
    print(f"drift table: {output} ({table.height} row(s))")

    if args.emit_counts:
        emit_corrections(args, codec, table)
    return 2 if args.fail_on_drift and not summary.clean else 0


def emit_corrections(args: argparse.Namespace, codec: Codec, table: pl.DataFrame) -> None:
    from availability.erp import correction_events, sku_horizon_breaches

    late = sku_horizon_breaches(table, int(args.dedupe_horizon_hours * HOUR_MS))
    if late:
        print(f"warning: {late} correction(s) are older than the dedupe horizon "
              f"({args.dedupe_horizon_hours:g} h) before their SKU's newest event: the engine "
              "dead-letters them; take a fresher ERP export")
    producer = ConfirmedProducer(kafka_connection(args, reach=True))
    run_ms = int(time.time() * 1000)
    try:
        for event in correction_events(table, run_ms):
            producer.produce(args.events_topic, codec.encode_event(event, args.events_topic),
                             event.position_key)
        delivered = producer.confirm()
    except (DeliveryFailed, KafkaException, RegistryError) as exc:
        raise CommandError(f"publishing corrections to {args.brokers} failed: {exc}") from exc
    print(f"published {delivered} COUNT correction(s) to {args.events_topic}")
