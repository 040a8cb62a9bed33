"""The engine end to end through the real broker: scripted scenario, DLQ, expiry."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from availability_contracts.codec import Codec
from availability_contracts.schemas import CHANNEL_SCHEMA, DEAD_LETTER_SCHEMA, POSITION_SCHEMA
from availability_contracts.topics import TopicNames
from availability_domain.events import EventType, InventoryEvent
from availability_kafka.topic_reader import latest_by_key, scan_topic

pytestmark = pytest.mark.kafka

RULES = """
[locations.DC1]
type = "dc"
tags = ["ship"]
safety_stock = 0

[locations.S001]
type = "store"
tags = ["ship-from-store", "pickup"]
safety_stock = 1

[channels.web]
locations = ["DC1"]
location_tags = ["ship-from-store"]
buffer = 2

[channels.amazon]
location_types = ["dc"]
allocation = 0.5
buffer = 1
max_quantity = 30

[channels.pickup]
location_tags = ["pickup"]
per_location = true
"""

MINUTE = 60_000
NOW = int(time.time() * 1000)
T0 = NOW - 6 * 60 * MINUTE


def ev(event_id: str, kind: EventType, location: str, quantity: int, at: int,
       sku: str = "SKU-1", **extra: Any) -> InventoryEvent:
    return InventoryEvent(event_id=event_id, event_type=kind, occurred_at=at, source="test",
                          sku=sku, location_id=location, quantity=quantity, **extra)


def scenario() -> list[InventoryEvent]:
    E = EventType
    t = [T0 + i * 10 * MINUTE for i in range(10)]
    events = [
        ev("e1", E.RECEIPT, "DC1", 100, t[1]),
        ev("e2", E.RECEIPT, "S001", 10, t[1]),
        ev("e3", E.SALE, "S001", 2, t[2]),
        ev("e4", E.TRANSFER_SHIPPED, "DC1", 20, t[3], transfer_id="T1",
           counterparty_location_id="S001"),
        ev("e5", E.TRANSFER_RECEIVED, "S001", 18, t[4], transfer_id="T1",
           counterparty_location_id="DC1"),
        ev("e6", E.RESERVATION_CREATED, "DC1", 5, t[5], reservation_id="R1", channel="web",
           expires_at=NOW + 3_600_000),
        ev("e7", E.RESERVATION_CREATED, "DC1", 3, t[5], reservation_id="R2", channel="web"),
        ev("e8", E.RESERVATION_RELEASED, "DC1", 0, t[6], reservation_id="R2"),
        ev("e9", E.RESERVATION_FULFILLED, "DC1", 5, t[7], reservation_id="R1"),
        ev("e10", E.RESERVATION_FULFILLED, "DC1", 4, t[8], reservation_id="R3"),
        ev("e11", E.RESERVATION_CREATED, "DC1", 4, t[7], reservation_id="R3", channel="web"),
        ev("e12", E.RESERVATION_CREATED, "DC1", 6, t[8], reservation_id="R4",
           channel="amazon", expires_at=NOW + 3_600_000),
        # late COUNT: taken between the shipment (t3) and the receipt (t4)
        ev("e13", E.COUNT, "S001", 25, t[3] + 5 * MINUTE),
        # stale COUNT: older than the one already applied
        ev("e14", E.COUNT, "S001", 7, t[2] + 5 * MINUTE),
        ev("e15", E.RESERVATION_CREATED, "DC1", 2, t[8], reservation_id="R5", channel="web",
           expires_at=NOW - MINUTE),
        ev("e20", E.RECEIPT, "S001", 5, t[1], sku="SKU-2"),
        ev("e21", E.RETURN, "S001", 2, t[2], sku="SKU-2", restockable=False),
        ev("e22", E.ADJUSTMENT, "S001", -1, t[3], sku="SKU-2", reason="damaged"),
    ]
    duplicates = [events[2], events[8], events[0], events[16]]
    return events + duplicates


EXPECTED_POSITIONS = {
    "SKU-1|DC1": dict(on_hand=71, unsellable=0, reserved=6, in_transit=0, safety_stock=0,
                      ats=65),
    "SKU-1|S001": dict(on_hand=43, unsellable=0, reserved=0, in_transit=0, safety_stock=1,
                       ats=42),
    "SKU-2|S001": dict(on_hand=4, unsellable=2, reserved=0, in_transit=0, safety_stock=1,
                       ats=3),
}
EXPECTED_CHANNELS = {
    "web|SKU-1": 105,
    "amazon|SKU-1": 30,
    "pickup|SKU-1|S001": 42,
    "web|SKU-2": 1,
    "pickup|SKU-2|S001": 3,
}
QUANTITIES = ("on_hand", "unsellable", "reserved", "in_transit", "safety_stock", "ats")


def tables(brokers: str, topics: TopicNames, codec: Codec
           ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    positions = latest_by_key(brokers, topics.positions,
                              lambda b: codec.decode(POSITION_SCHEMA, b), timeout=30)
    channels = latest_by_key(brokers, topics.channels,
                             lambda b: codec.decode(CHANNEL_SCHEMA, b), timeout=30)
    return positions, channels


def position_numbers(positions: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    return {key: {q: rec[q] for q in QUANTITIES} for key, rec in positions.items()}


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


def test_scripted_retail_scenario(brokers: str, topics: TopicNames, codec: Codec,
                                  rules_file: Path, publish_events: Callable[..., int],
                                  engine_factory: Callable[..., Any],
                                  wait_for: Callable[..., Any]) -> None:
    publish_events(topics.events, scenario())
    engine = engine_factory(topics, rules_file).start()

    def settled() -> tuple[dict[str, Any], dict[str, Any]] | None:
        positions, channels = tables(brokers, topics, codec)
        numbers = {key: rec["ats"] for key, rec in channels.items()}
        if position_numbers(positions) == EXPECTED_POSITIONS and numbers == EXPECTED_CHANNELS:
            return positions, channels
        return None

    try:
        positions, channels = wait_for(settled, 60, "the expected snapshots")
    except AssertionError:
        print(engine.log())
        raise
    assert positions["SKU-1|S001"]["as_of"] == T0 + 40 * MINUTE
    assert positions["SKU-1|DC1"]["as_of"] == T0 + 80 * MINUTE
    web = channels["web|SKU-1"]
    assert web["location_id"] is None
    assert {c["location_id"]: c["ats"] for c in web["locations"]} == {"DC1": 65, "S001": 42}
    assert channels["pickup|SKU-1|S001"]["location_id"] == "S001"
    assert channels["amazon|SKU-1"]["as_of"] == positions["SKU-1|DC1"]["as_of"]

    # versions strictly increase per key and a snapshot is only emitted on change
    seen: dict[str, list[int]] = {}
    for message in scan_topic(brokers, topics.positions, timeout=30):
        record = codec.decode(POSITION_SCHEMA, message.value())
        seen.setdefault(message.key().decode(), []).append(record["version"])
    for versions in seen.values():
        assert versions == sorted(set(versions)), versions

    # a later event changes the answer
    publish_events(topics.events, [ev("e30", EventType.SALE, "DC1", 10, NOW)])
    wait_for(lambda: tables(brokers, topics, codec)[1]["web|SKU-1"]["ats"] == 95, 30,
             "web|SKU-1 to drop to 95 after a sale")
    assert engine.stop() in (0, 130)


def _dead_letters(brokers: str, topic: str, codec: Codec) -> list[dict[str, Any]]:
    return [codec.decode(DEAD_LETTER_SCHEMA, m.value()) for m in scan_topic(brokers, topic, 30)]


def test_bad_input_goes_to_the_dlq_with_a_reason(
        brokers: str, topics: TopicNames, codec: Codec, rules_file: Path,
        publish_events: Callable[..., int], engine_factory: Callable[..., Any],
        wait_for: Callable[..., Any]) -> None:
    good = ev("g1", EventType.RECEIPT, "DC1", 7, NOW - MINUTE)
    valid_bytes = codec.encode_event(good, topics.events)
    bad_enum = bytearray(valid_bytes)
    bad_enum[3] = 0x7E  # event_type index 63: no such type
    invalid = [
        b"\x00\x01garbage",
        bytes(bad_enum),
        codec.encode_event({**good.to_record(), "event_id": "b1", "event_type": "ADJUSTMENT",
                            "quantity": 3}, topics.events),
        codec.encode_event({**good.to_record(), "event_id": "b2", "event_type": "SALE",
                            "quantity": -3}, topics.events),
        codec.encode_event({**good.to_record(), "event_id": "b3", "sku": "SKU|1"},
                           topics.events),
        codec.encode_event({**good.to_record(), "event_id": "b4",
                            "event_type": "TRANSFER_SHIPPED", "transfer_id": "T9"},
                           topics.events),
    ]
    publish_events(topics.events, [*invalid, good])
    engine = engine_factory(topics, rules_file).start()
    letters = wait_for(lambda: (d := _dead_letters(brokers, topics.dlq, codec)) and
                       len(d) == len(invalid) and d, 60, "six dead letters")
    reasons = sorted(letter["reason"] for letter in letters)
    expected_fragments = ["cannot decode", "cannot decode", "ADJUSTMENT requires field 'reason'",
                          "SALE quantity must be > 0", "contains the key delimiter",
                          "requires field 'counterparty_location_id'"]
    for fragment in expected_fragments:
        assert any(fragment in reason for reason in reasons), (fragment, reasons)
    for letter in letters:
        assert letter["source_topic"] == topics.events
        assert letter["original_value"] in invalid
        assert letter["source_offset"] >= 0
    positions = wait_for(lambda: tables(brokers, topics, codec)[0], 30, "positions")
    assert position_numbers(positions) == {"SKU-1|DC1": dict(
        on_hand=7, unsellable=0, reserved=0, in_transit=0, safety_stock=0, ats=7)}
    assert engine.process.poll() is None, "the flow keeps running after bad input"
    engine.stop()


def test_reservation_expires_without_any_further_event(
        brokers: str, topics: TopicNames, codec: Codec, rules_file: Path,
        publish_events: Callable[..., int], engine_factory: Callable[..., Any],
        wait_for: Callable[..., Any]) -> None:
    now = int(time.time() * 1000)
    publish_events(topics.events, [
        ev("x1", EventType.RECEIPT, "DC1", 10, now - MINUTE),
        ev("x2", EventType.RESERVATION_CREATED, "DC1", 4, now - MINUTE, reservation_id="R1",
           channel="web", expires_at=now + 6_000),
    ])
    engine_factory(topics, rules_file).start()

    def dc1_reserved() -> int | None:
        positions = tables(brokers, topics, codec)[0]
        return positions["SKU-1|DC1"]["reserved"] if "SKU-1|DC1" in positions else None

    wait_for(lambda: dc1_reserved() == 4, 30, "the reservation to count")
    wait_for(lambda: dc1_reserved() == 0, 30, "the reservation to expire")
    assert tables(brokers, topics, codec)[1]["web|SKU-1"]["ats"] == 8
