"""Events -> engine -> snapshot topics -> replica -> gRPC answers, end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from availability_api.client import ApiError, AvailabilityClient
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_contracts.topics import TopicNames
from availability_domain.events import EventType, InventoryEvent

pytestmark = pytest.mark.kafka

RULES = """
[locations.DC1]
type = "dc"
safety_stock = 0

[locations.S001]
type = "store"
tags = ["ship-from-store", "pickup"]
safety_stock = 1

[channels.web]
locations = ["DC1"]
location_tags = ["ship-from-store"]
buffer = 2

[channels.pickup]
location_tags = ["pickup"]
per_location = true
"""

MINUTE = 60_000
T0 = int(time.time() * 1000) - 60 * MINUTE


def ev(event_id: str, kind: EventType, location: str, quantity: int, minute: int,
       sku: str = "SKU-1", **extra: Any) -> InventoryEvent:
    return InventoryEvent(event_id=event_id, event_type=kind, occurred_at=T0 + minute * MINUTE,
                          source="test", sku=sku, location_id=location, quantity=quantity,
                          **extra)


SCENARIO = [
    ev("a1", EventType.RECEIPT, "DC1", 50, 1),
    ev("a2", EventType.RECEIPT, "S001", 10, 2),
    ev("a3", EventType.SALE, "S001", 3, 3),
    ev("a4", EventType.RESERVATION_CREATED, "DC1", 5, 4, reservation_id="R1", channel="web"),
    ev("a5", EventType.RECEIPT, "DC1", 7, 5, sku="SKU-2"),
    ev("a3", EventType.SALE, "S001", 3, 3),  # duplicate: ignored
]
# DC1: on_hand 50 - reserved 5 = 45; S001: 10 - 3 - safety 1 = 6
# web = 45 + 6 - buffer 2 = 49; SKU-2: 7 - 2 = 5; pickup SKU-1 at S001 = 6
EXPECTED_WEB = {"SKU-1": 49, "SKU-2": 5, "SKU-404": None}


def numbers(answer: list[pb.ChannelAvailability]) -> dict[str, int | None]:
    return {value.sku: value.ats if value.found else None for value in answer}


def test_api_answers_the_engine_numbers_and_watch_sees_a_change(
        topics: TopicNames, tmp_path: Path, publish_events: Callable[..., int],
        engine_factory: Callable[..., Any], api_factory: Callable[..., Any],
        wait_for: Callable[..., Any]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    publish_events(topics.events, SCENARIO)
    engine = engine_factory(topics, rules).start()
    api = api_factory(topics)
    client: AvailabilityClient = api.client()
    skus = list(EXPECTED_WEB)
    try:
        wait_for(lambda: numbers(client.batch_get("web", skus).results) == EXPECTED_WEB
                 if "web" in api.replica.channel_kinds else None,
                 60, "the web numbers of the scenario")
    except AssertionError:
        print(engine.log())
        raise

    web = client.get("web", "SKU-1")
    value = web.availability
    assert value.found and value.ats == 49 and value.location_id == ""
    assert value.as_of == T0 + 4 * MINUTE
    assert value.version >= 1 and value.computed_at >= T0
    assert {c.location_id: c.ats for c in value.locations} == {"DC1": 45, "S001": 6}
    assert web.replica_lag >= 0

    pickup = client.get("pickup", "SKU-1", "S001").availability
    assert (pickup.found, pickup.ats, pickup.location_id) == (True, 6, "S001")
    missing = client.get("pickup", "SKU-2", "S001").availability
    assert (missing.found, missing.ats, missing.version) == (False, 0, 0)
    with pytest.raises(ApiError, match="per-location"):
        client.get("pickup", "SKU-1")

    positions = {p.location_id: p for p in client.list_positions("SKU-1").positions}
    assert {loc: (p.on_hand, p.reserved, p.safety_stock, p.ats)
            for loc, p in positions.items()} == {"DC1": (50, 5, 0, 45), "S001": (7, 0, 1, 6)}
    assert positions["S001"].as_of == T0 + 3 * MINUTE and positions["S001"].version >= 1
    only_dc = client.list_positions("SKU-1", ["DC1", "NOWHERE"]).positions
    assert [p.location_id for p in only_dc] == ["DC1"]

    watch = client.watch("web", ["SKU-1", "SKU-2"], timeout=60)
    stream = iter(watch)
    initial = [next(stream), next(stream)]
    assert [(r.initial, r.availability.sku, r.availability.ats) for r in initial] == [
        (True, "SKU-1", 49), (True, "SKU-2", 5)]

    publish_events(topics.events, [ev("a6", EventType.SALE, "DC1", 4, 10)])
    change = next(stream)  # DC1 46 - 5 = 41, web = 41 + 6 - 2 = 45
    watch.cancel()
    assert (change.initial, change.availability.sku, change.availability.ats) == (
        False, "SKU-1", 45)
    assert change.availability.version > initial[0].availability.version
    assert client.get("web", "SKU-1").availability.ats == 45
    wait_for(lambda: api.server.feed.subscriptions == 0, 10, "the cancelled watch to end")
    client.close()
    engine.stop()
