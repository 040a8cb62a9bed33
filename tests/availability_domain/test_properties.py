"""Property tests: published numbers do not depend on arrival order.

Random sets of events of all ten types, over few SKUs, locations, reservation and
transfer ids (so they collide), with duplicates, are applied in random orders through
:class:`SkuInventory` and :class:`SnapshotPublisher`. The latest snapshot per key must
equal a reference model that recomputes everything from the set of unique events, and
two orders must give identical snapshots.
"""

from __future__ import annotations

import math
import pickle
from collections import defaultdict
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from availability_domain.events import EventType, InventoryEvent, parse_event
from availability_domain.inventory import SkuInventory
from availability_domain.rules import parse_rules
from availability_domain.snapshots import SnapshotPublisher

T0 = 1_700_000_000_000
MINUTE = 60_000
NOW = T0 + 2 * 3_600_000
"""Engine wall clock at the end of a run; expiries are drawn around it."""
EARLIEST_NOW = NOW - 10_000

SKUS = ("A", "B")
LOCATIONS = ("DC1", "DC2", "S1", "S2", "X9")
RESERVATION_IDS = ("r1", "r2", "r3")
TRANSFER_IDS = ("t1", "t2")

RULES_DATA: dict[str, Any] = {
    "locations": {
        "DC1": {"type": "dc", "tags": ["ship"], "safety_stock": 0},
        "DC2": {"type": "dc", "safety_stock": 2},
        "S1": {"type": "store", "tags": ["pickup", "ship-from-store"], "safety_stock": 1},
        "S2": {"type": "store", "tags": ["pickup"], "safety_stock": 1},
    },
    "safety_stock": [
        {"sku": "A", "location": "S1", "quantity": 3},
        {"sku": "A", "quantity": 2},
        {"sku": "B", "location": "DC2", "quantity": 0},
    ],
    "channels": {
        "web": {
            "location_types": ["dc"],
            "location_tags": ["ship-from-store"],
            "buffer": 1,
            "include_in_transit": True,
        },
        "amazon": {"locations": ["DC1", "X9"], "allocation": 0.7, "buffer": 2, "max_quantity": 12},
        "walmart": {"location_tags": ["ship"], "allocation": 0.29, "max_quantity": 5},
        "pickup": {
            "location_tags": ["pickup"],
            "per_location": True,
            "allocation": 0.5,
            "include_in_transit": True,
        },
    },
}
RULES = parse_rules(RULES_DATA, "property-rules")

PositionValues = tuple[int, int, int, int, int, int, int]
ChannelValues = tuple[int, int, tuple[tuple[str, int, int], ...]]
Published = tuple[dict[str, PositionValues], dict[str, ChannelValues]]


# --------------------------------------------------------------------------------------
# Reference model: recomputes from the set of unique events; shares no fold logic with
# position.py / inventory.py / channels.py.
# --------------------------------------------------------------------------------------

_ON_HAND_SIGN = {
    EventType.RECEIPT: 1,
    EventType.ADJUSTMENT: 1,
    EventType.SALE: -1,
    EventType.TRANSFER_SHIPPED: -1,
    EventType.TRANSFER_RECEIVED: 1,
    EventType.RESERVATION_FULFILLED: -1,
}
_CLOSES_RESERVATION = (EventType.RESERVATION_RELEASED, EventType.RESERVATION_FULFILLED)


def _on_hand_delta(event: InventoryEvent) -> int | None:
    """The on_hand change an event makes at its own location_id, if any."""
    if event.event_type is EventType.RETURN:
        return event.quantity if event.restockable else None
    sign = _ON_HAND_SIGN.get(event.event_type)
    return None if sign is None else sign * event.quantity


def _reference_safety_stock(sku: str, location_id: str) -> int:
    overrides = RULES_DATA["safety_stock"]
    for entry in overrides:
        if entry["sku"] == sku and entry.get("location") == location_id:
            return entry["quantity"]
    for entry in overrides:
        if entry["sku"] == sku and "location" not in entry:
            return entry["quantity"]
    return RULES_DATA["locations"].get(location_id, {}).get("safety_stock", 0)


def _reference_position(
    sku: str, location_id: str, events: list[InventoryEvent], now: int
) -> PositionValues:
    here = [e for e in events if e.location_id == location_id]
    deltas = [(e.occurred_at, d) for e in here if (d := _on_hand_delta(e)) is not None]
    counts = [e for e in here if e.event_type is EventType.COUNT]
    if counts:
        latest = max(counts, key=lambda e: (e.occurred_at, e.event_id))
        on_hand = latest.quantity + sum(d for t, d in deltas if t > latest.occurred_at)
    else:
        on_hand = sum(d for _, d in deltas)

    unsellable = sum(
        e.quantity for e in here if e.event_type is EventType.RETURN and not e.restockable
    )

    reserved = 0
    for reservation_id in {e.reservation_id for e in here if e.reservation_id}:
        mine = [e for e in here if e.reservation_id == reservation_id]
        if any(e.event_type in _CLOSES_RESERVATION for e in mine):
            continue
        created = [e for e in mine if e.event_type is EventType.RESERVATION_CREATED]
        winner = min(created, key=lambda e: (e.occurred_at, e.event_id))
        if winner.expires_at is None or winner.expires_at > now:
            reserved += winner.quantity

    in_transit = 0
    shipped_here = [
        e
        for e in events
        if e.event_type is EventType.TRANSFER_SHIPPED and e.counterparty_location_id == location_id
    ]
    for transfer_id in {e.transfer_id for e in shipped_here}:
        received = any(
            e.event_type is EventType.TRANSFER_RECEIVED and e.transfer_id == transfer_id
            for e in here
        )
        if not received:
            mine = [e for e in shipped_here if e.transfer_id == transfer_id]
            in_transit += min(mine, key=lambda e: (e.occurred_at, e.event_id)).quantity

    safety_stock = _reference_safety_stock(sku, location_id)
    ats = max(0, on_hand - reserved - safety_stock)
    as_of = max(e.occurred_at for e in events)
    return (on_hand, unsellable, reserved, in_transit, safety_stock, ats, as_of)


def _reference_eligible(channel: dict[str, Any], location_id: str) -> bool:
    declared = RULES_DATA["locations"].get(location_id)
    location_type = declared["type"] if declared else "unknown"
    tags = set(declared.get("tags", [])) if declared else set()
    return (
        location_id in channel.get("locations", [])
        or location_type in channel.get("location_types", [])
        or bool(tags & set(channel.get("location_tags", [])))
    )


def _reference_channel(channel: dict[str, Any], rows: list[tuple[str, PositionValues]]) -> int:
    total = sum(
        values[5] + (values[3] if channel.get("include_in_transit", False) else 0)
        for _, values in rows
    )
    allocation = Fraction(str(channel.get("allocation", 1)))
    value = max(0, math.floor(allocation * total) - channel.get("buffer", 0))
    cap = channel.get("max_quantity")
    return value if cap is None else min(cap, value)


def reference(events: Iterable[InventoryEvent], now: int) -> Published:
    unique = {e.event_id: e for e in events}
    touching: dict[tuple[str, str], list[InventoryEvent]] = defaultdict(list)
    for event in unique.values():
        touching[(event.sku, event.location_id)].append(event)
        if event.event_type is EventType.TRANSFER_SHIPPED:
            assert event.counterparty_location_id is not None
            touching[(event.sku, event.counterparty_location_id)].append(event)

    positions = {
        f"{sku}|{location_id}": _reference_position(sku, location_id, evs, now)
        for (sku, location_id), evs in touching.items()
    }

    channels: dict[str, ChannelValues] = {}
    for name, channel in RULES_DATA["channels"].items():
        for sku in SKUS:
            rows = sorted(
                (location_id, values)
                for key, values in positions.items()
                for key_sku, location_id in [key.split("|")]
                if key_sku == sku and _reference_eligible(channel, location_id)
            )
            groups = (
                [([row], f"{name}|{sku}|{row[0]}") for row in rows]
                if channel.get("per_location", False)
                else ([(rows, f"{name}|{sku}")] if rows else [])
            )
            for group, key in groups:
                channels[key] = (
                    _reference_channel(channel, group),
                    max(values[6] for _, values in group),
                    tuple((loc, values[5], values[3]) for loc, values in group),
                )
    return positions, channels


# --------------------------------------------------------------------------------------
# The engine, driven the way the dataflow drives it.
# --------------------------------------------------------------------------------------


def run_engine(order: Sequence[InventoryEvent], checkpoint: int) -> Published:
    """Apply in ``order`` with a rising wall clock; pickle/unpickle state at ``checkpoint``,
    and pickle it (as every epoch's snapshot does, the live state carrying on) after
    every other event before: a snapshot reuses the bytes of positions that did not
    change since the last one, so one change missed would restore a stale position."""
    state: dict[str, tuple[SkuInventory, SnapshotPublisher]] = {}
    positions: dict[str, tuple[int, PositionValues]] = {}
    channels: dict[str, tuple[int, ChannelValues]] = {}

    def publish(sku: str, touched: tuple[str, ...], now: int, computed_at: int) -> None:
        inventory, publisher = state[sku]
        position_snapshots, channel_snapshots = publisher.publish(
            inventory, touched, RULES, now, computed_at
        )
        for p in position_snapshots:
            assert p.version == positions.get(p.key, (0,))[0] + 1
            values = (
                p.on_hand, p.unsellable, p.reserved, p.in_transit, p.safety_stock, p.ats, p.as_of
            )
            assert positions.get(p.key, (0, None))[1] != values
            positions[p.key] = (p.version, values)
        for c in channel_snapshots:
            assert c.version == channels.get(c.key, (0,))[0] + 1
            channel_values = (c.ats, c.as_of, tuple(tuple(loc) for loc in c.locations))
            assert channels.get(c.key, (0, None))[1] != channel_values
            channels[c.key] = (c.version, channel_values)

    for index, event in enumerate(order):
        if index == checkpoint:
            state = pickle.loads(pickle.dumps(state))
        elif index % 2:  # an epoch's snapshot, kept by the live state for the next one
            pickle.dumps(state)
        now = EARLIEST_NOW + (NOW - EARLIEST_NOW) * index // len(order)
        if event.sku not in state:
            state[event.sku] = (SkuInventory(event.sku), SnapshotPublisher())
        outcome = state[event.sku][0].apply_event(event, now)
        assert outcome.status in ("applied", "duplicate"), outcome
        publish(event.sku, outcome.touched, now, index)
    for sku in state:
        publish(sku, (), NOW, len(order))
    return (
        {key: values for key, (_, values) in positions.items()},
        {key: values for key, (_, values) in channels.items()},
    )


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------


@st.composite
def event_fields(
    draw: st.DrawFn,
    skus: Sequence[str],
    locations: Sequence[str],
    reservation_ids: Sequence[str],
    minutes: int,
) -> dict[str, Any]:
    kind = draw(st.sampled_from(list(EventType)))
    location_id = draw(st.sampled_from(locations))
    other = draw(st.sampled_from([loc for loc in locations if loc != location_id]))
    fields: dict[str, Any] = {
        "event_type": kind.value,
        "occurred_at": T0 + draw(st.integers(0, minutes)) * MINUTE,
        "source": "prop",
        "sku": draw(st.sampled_from(skus)),
        "location_id": location_id,
    }
    small = st.integers(1, 6)
    if kind is EventType.RECEIPT:
        fields["quantity"] = draw(st.integers(1, 12))
    elif kind is EventType.ADJUSTMENT:
        fields["quantity"] = draw(st.integers(-4, 4).filter(bool))
        fields["reason"] = "cycle-count"
    elif kind is EventType.COUNT:
        fields["quantity"] = draw(st.integers(0, 15))
    elif kind is EventType.SALE:
        fields["quantity"] = draw(small)
    elif kind is EventType.RETURN:
        fields["quantity"] = draw(small)
        fields["restockable"] = draw(st.booleans())
    elif kind in (EventType.TRANSFER_SHIPPED, EventType.TRANSFER_RECEIVED):
        fields["quantity"] = draw(st.integers(0 if kind is EventType.TRANSFER_RECEIVED else 1, 8))
        fields["transfer_id"] = draw(st.sampled_from(TRANSFER_IDS))
        fields["counterparty_location_id"] = other
    elif kind is EventType.RESERVATION_CREATED:
        fields["quantity"] = draw(small)
        fields["reservation_id"] = draw(st.sampled_from(reservation_ids))
        fields["channel"] = "web"
        fields["expires_at"] = draw(
            st.none() | st.integers(EARLIEST_NOW - 2_000, NOW + 2_000)
        )
    elif kind is EventType.RESERVATION_RELEASED:
        fields["quantity"] = 0
        fields["reservation_id"] = draw(st.sampled_from(reservation_ids))
    else:
        fields["quantity"] = draw(small)
        fields["reservation_id"] = draw(st.sampled_from(reservation_ids))
    return fields


def _some(values: Sequence[str], least: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=least, max_size=len(values), unique=True)


@st.composite
def event_sets(draw: st.DrawFn) -> list[InventoryEvent]:
    """Unique events (ids unrelated to time, so id tie-breaks matter) plus duplicates.

    Each example narrows SKUs, locations, reservation ids and the time span, and adds
    "resends": copies of some events under a new event_id with another time and
    quantity, so that equal-time COUNTs and competing CREATEDs/SHIPPEDs for one
    reservation or transfer are common.
    """
    minutes = draw(st.integers(1, 20))
    fields = event_fields(
        draw(_some(SKUS, 1)),
        draw(_some(LOCATIONS, 2)),
        draw(_some(RESERVATION_IDS, 1)),
        minutes,
    )
    bodies = draw(st.lists(fields, min_size=1, max_size=30))
    resends = draw(
        st.lists(
            st.tuples(st.sampled_from(bodies), st.integers(0, minutes), st.integers(1, 6)),
            max_size=12,
        )
    )
    bodies += [
        {**body, "occurred_at": T0 + minute * MINUTE, "quantity": quantity}
        for body, minute, quantity in resends
    ]
    ids = draw(st.lists(st.integers(0, 999), min_size=len(bodies), max_size=len(bodies),
                        unique=True))
    events = [
        parse_event({**body, "event_id": f"e{number:03d}"})
        for body, number in zip(bodies, ids, strict=True)
    ]
    duplicates = draw(st.lists(st.sampled_from(events), max_size=10))
    return events + duplicates


@settings(max_examples=300, deadline=None)
@given(data=st.data(), events=event_sets())
def test_engine_matches_reference_model(data: st.DataObject, events: list[InventoryEvent]) -> None:
    order = data.draw(st.permutations(events), label="order")
    checkpoint = data.draw(st.integers(0, len(order)), label="checkpoint")
    assert run_engine(order, checkpoint) == reference(events, NOW)


@settings(max_examples=250, deadline=None)
@given(data=st.data(), events=event_sets())
def test_any_two_orders_publish_the_same_numbers(
    data: st.DataObject, events: list[InventoryEvent]
) -> None:
    first = data.draw(st.permutations(events), label="first")
    second = data.draw(st.permutations(events), label="second")
    assert run_engine(first, len(first)) == run_engine(second, 0)
