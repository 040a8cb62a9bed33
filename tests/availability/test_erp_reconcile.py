"""bootstrap and reconcile against the real broker and the real engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import KafkaException

from availability.cli import main
from availability.erp import DRIFT, MATCH, MISSING_IN_ENGINE, MISSING_IN_ERP, MOVED
from availability_contracts.codec import Codec
from availability_contracts.schemas import POSITION_SCHEMA
from availability_contracts.topics import TopicNames
from availability_domain.events import EventType, InventoryEvent, decode_event
from availability_kafka.topic_reader import latest_by_key, scan_topic

pytestmark = pytest.mark.kafka

RULES = """
[locations.DC1]
type = "dc"
safety_stock = 0

[locations.S001]
type = "store"
safety_stock = 1

[channels.web]
location_types = ["dc", "store"]
"""

MINUTE = 60_000
NOW = int(time.time() * 1000)
T0 = NOW - 120 * MINUTE  # bootstrap snapshot
T1 = T0 + 30 * MINUTE    # the later ERP snapshot reconciled against


def erp_file(path: Path, rows: list[tuple[str, str, int, int]]) -> Path:
    lines = ["sku,location_id,on_hand,as_of", *(f"{s},{loc},{q},{at}" for s, loc, q, at in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def on_hand(brokers: str, topics: TopicNames, codec: Codec
            ) -> dict[str, tuple[int, int]] | None:
    """key -> (on_hand, as_of) from the compacted positions topic (None: not readable yet,
    a fresh topic may still be electing its partition leaders)."""
    try:
        table = latest_by_key(brokers, topics.positions,
                              lambda b: codec.decode(POSITION_SCHEMA, b), timeout=30)
    except KafkaException:
        return None
    return {key: (rec["on_hand"], rec["as_of"]) for key, rec in table.items()}


def topic_args(brokers: str, topics: TopicNames) -> list[str]:
    return ["--brokers", brokers, "--events-topic", topics.events]


def test_bootstrap_reconcile_and_correct(
        brokers: str, topics: TopicNames, codec: Codec, tmp_path: Path,
        publish_events: Callable[..., int], engine_factory: Callable[..., Any],
        wait_for: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    engine = engine_factory(topics, rules).start()

    # 1. bootstrap: every row becomes a position with on_hand = the ERP number, as of T0.
    opening = erp_file(tmp_path / "opening.csv", [
        ("SKU-1", "DC1", 10, T0), ("SKU-1", "S001", 5, T0), ("SKU-2", "DC1", 0, T0),
        ("SKU-4", "DC1", 6, T0)])
    assert main(["bootstrap", "--erp-snapshot", str(opening), *topic_args(brokers, topics)]) == 0
    assert "published 4 COUNT event(s)" in capsys.readouterr().out
    bootstrapped = {"SKU-1|DC1": (10, T0), "SKU-1|S001": (5, T0), "SKU-2|DC1": (0, T0),
                    "SKU-4|DC1": (6, T0)}
    try:
        wait_for(lambda: on_hand(brokers, topics, codec) == bootstrapped, 40,
                 "the bootstrap counts as positions")
    except AssertionError:
        print(engine.log())
        raise

    # 2. movements after the opening count; then the same file bootstrapped again: the
    # re-sent counts are duplicates (same ids) and never undo the later sale.
    publish_events(topics.events, [
        InventoryEvent("sale-1", EventType.SALE, T0 + 10 * MINUTE, "pos", "SKU-1", "DC1", 3),
        InventoryEvent("rcpt-1", EventType.RECEIPT, T1 + 5 * MINUTE, "wms", "SKU-1", "S001",
                       2),
    ])
    assert main(["bootstrap", "--erp-snapshot", str(opening), *topic_args(brokers, topics)]) == 0
    moved = {**bootstrapped, "SKU-1|DC1": (7, T0 + 10 * MINUTE),
             "SKU-1|S001": (7, T1 + 5 * MINUTE)}
    wait_for(lambda: on_hand(brokers, topics, codec) == moved, 30, "the sale and the receipt")
    ids = {decode_event(codec, m.value()).event_id
           for m in scan_topic(brokers, topics.events, timeout=30)}
    assert len(ids) == 4 + 2, "bootstrapping the same file twice re-sends the same ids"

    # 3. the ERP at T1 never saw the sale: a planted drift of +3.
    later = erp_file(tmp_path / "later.csv", [
        ("SKU-1", "DC1", 10, T1),   # engine 7, as of T0+10m <= T1: drift +3
        ("SKU-1", "S001", 5, T1),   # engine moved at T1+5m: not compared
        ("SKU-4", "DC1", 6, T1),    # match
        ("SKU-3", "DC1", 4, T1),    # the engine has never heard of it
    ])                              # SKU-2|DC1 is not in this file: missing in ERP
    drift_csv = tmp_path / "drift.csv"
    args = ["reconcile", "--erp-snapshot", str(later), "--brokers", brokers,
            "--positions-topic", topics.positions, "--events-topic", topics.events]
    assert main([*args, "--output", str(drift_csv), "--fail-on-drift"]) == 2
    out = capsys.readouterr().out
    assert "positions compared" in out and "largest drifts" in out
    table = pl.read_csv(drift_csv)
    statuses = {(r["sku"], r["location_id"]): (r["status"], r["drift"])
                for r in table.iter_rows(named=True)}
    assert statuses == {
        ("SKU-1", "DC1"): (DRIFT, 3),
        ("SKU-1", "S001"): (MOVED, None),
        ("SKU-4", "DC1"): (MATCH, 0),
        ("SKU-3", "DC1"): (MISSING_IN_ENGINE, 4),
        ("SKU-2", "DC1"): (MISSING_IN_ERP, None),
    }

    # 4. --emit-counts: the ERP number as a COUNT at T1 for the drift and the missing stock.
    assert main([*args, "--output", str(drift_csv), "--emit-counts"]) == 0
    assert "published 2 COUNT correction(s)" in capsys.readouterr().out
    corrected = {**moved, "SKU-1|DC1": (10, T1), "SKU-3|DC1": (4, T1)}
    wait_for(lambda: on_hand(brokers, topics, codec) == corrected, 30, "the corrections")

    # 5. reconciled again: no drift left, the moved position is still not compared.
    drift_parquet = tmp_path / "drift.parquet"
    assert main([*args, "--output", str(drift_parquet), "--fail-on-drift"]) == 0
    after = pl.read_parquet(drift_parquet)
    counts = dict(after.group_by("status").len().iter_rows())
    assert counts == {MATCH: 3, MOVED: 1, MISSING_IN_ERP: 1}
    assert after.filter(pl.col("status") == MATCH)["drift"].to_list() == [0, 0, 0]
    assert engine.process.poll() is None
    engine.stop()


def test_a_bad_file_publishes_nothing(brokers: str, topics: TopicNames, tmp_path: Path,
                                      wait_for: Callable[..., Any],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = erp_file(tmp_path / "erp.csv", [("SKU-1", "DC1", 3, T0), ("SKU-2", "DC1", -1, T0)])
    assert main(["bootstrap", "--erp-snapshot", str(path), *topic_args(brokers, topics)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: row 2 (line 3), column 'on_hand': negative stock -1" in err
    assert "nothing published" in err

    def events_topic_is_readable() -> bool:
        # A topic this fresh may still be electing its partition leaders.
        try:
            messages.extend(scan_topic(brokers, topics.events, timeout=10))
        except KafkaException:
            return False
        return True

    messages: list[object] = []
    wait_for(events_topic_is_readable, 20, "the events topic to answer")
    assert messages == []
