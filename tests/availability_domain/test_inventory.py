"""SkuInventory: routing, dedupe with bounded memory, expiry and quantities."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest

from availability_domain.events import InventoryEvent, parse_event
from availability_domain.inventory import (
    DAY_MS,
    Outcome,
    PositionQuantities,
    SkuInventory,
    _inventory,
)
from availability_domain.position import Position, Reservation, ReservationStatus, Transfer
from availability_domain.rules import Rules, parse_rules

T0 = 1_700_000_000_000
HOUR = 3_600_000
RULES = parse_rules(
    {
        "locations": {
            "DC1": {"type": "dc", "safety_stock": 2},
            "S1": {"type": "store", "safety_stock": 1},
        },
        "safety_stock": [
            {"sku": "A", "location": "S1", "quantity": 3},
            {"sku": "B", "quantity": 4},
        ],
    },
    "test",
)


def ev(
    event_id: str,
    kind: str,
    at: int,
    quantity: int = 1,
    location: str = "DC1",
    sku: str = "A",
    **fields: Any,
) -> InventoryEvent:
    record = {
        "event_id": event_id,
        "event_type": kind,
        "occurred_at": T0 + at,
        "source": "test",
        "sku": sku,
        "location_id": location,
        "quantity": quantity,
        **fields,
    }
    if kind == "ADJUSTMENT":
        record.setdefault("reason", "damage")
    if kind.startswith("TRANSFER"):
        record.setdefault("counterparty_location_id", "S1" if location == "DC1" else "DC1")
    if kind == "RESERVATION_CREATED":
        record.setdefault("channel", "web")
    return parse_event(record)


def test_applied_outcome_touches_the_location() -> None:
    inventory = SkuInventory("A")
    assert inventory.apply_event(ev("1", "RECEIPT", 0, 5), T0) == Outcome(
        "applied", None, ("DC1",)
    )
    assert inventory.position_quantities("DC1", RULES) == PositionQuantities(
        on_hand=5, unsellable=0, reserved=0, in_transit=0, safety_stock=2, ats=3, as_of=T0
    )


def test_transfer_shipped_touches_origin_and_destination() -> None:
    inventory = SkuInventory("A")
    inventory.apply_event(ev("1", "RECEIPT", 0, 10), T0)
    outcome = inventory.apply_event(ev("2", "TRANSFER_SHIPPED", 1, 4, transfer_id="t1"), T0)
    assert outcome.touched == ("DC1", "S1")
    assert inventory.position_quantities("DC1", RULES).on_hand == 6
    destination = inventory.position_quantities("S1", RULES)
    assert (destination.on_hand, destination.in_transit, destination.as_of) == (0, 4, T0 + 1)
    received = inventory.apply_event(
        ev("3", "TRANSFER_RECEIVED", 2, 3, location="S1", transfer_id="t1"), T0
    )
    assert received.touched == ("S1",)
    destination = inventory.position_quantities("S1", RULES)
    assert (destination.on_hand, destination.in_transit) == (3, 0)


def test_received_before_shipped_across_positions() -> None:
    inventory = SkuInventory("A")
    inventory.apply_event(ev("3", "TRANSFER_RECEIVED", 2, 4, location="S1", transfer_id="t1"), T0)
    inventory.apply_event(ev("2", "TRANSFER_SHIPPED", 1, 4, transfer_id="t1"), T0)
    origin = inventory.position_quantities("DC1", RULES)
    destination = inventory.position_quantities("S1", RULES)
    assert (origin.on_hand, destination.on_hand, destination.in_transit) == (-4, 4, 0)


def test_zero_effect_event_still_creates_its_position() -> None:
    inventory = SkuInventory("A")
    outcome = inventory.apply_event(
        ev("1", "RESERVATION_RELEASED", 0, 0, location="S1", reservation_id="r"), T0
    )
    assert outcome.touched == ("S1",)
    assert inventory.position_quantities("S1", RULES) == PositionQuantities(
        on_hand=0, unsellable=0, reserved=0, in_transit=0, safety_stock=3, ats=0, as_of=T0
    )


def test_ats_uses_reserved_and_safety_stock_and_keeps_raw_on_hand() -> None:
    inventory = SkuInventory("A")
    inventory.apply_event(ev("1", "RECEIPT", 0, 10), T0)
    inventory.apply_event(ev("2", "RESERVATION_CREATED", 1, 3, reservation_id="r1"), T0)
    assert inventory.position_quantities("DC1", RULES).ats == 10 - 3 - 2
    inventory.apply_event(ev("3", "SALE", 2, 20), T0)
    quantities = inventory.position_quantities("DC1", RULES)
    assert (quantities.on_hand, quantities.ats) == (-10, 0)


def test_safety_stock_comes_from_rules_per_sku() -> None:
    inventory = SkuInventory("B")
    inventory.apply_event(ev("1", "RECEIPT", 0, 10, sku="B"), T0)
    assert inventory.position_quantities("DC1", RULES).safety_stock == 4
    assert inventory.position_quantities("DC1", Rules.empty()).ats == 10


def test_event_for_another_sku_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="sku"):
        SkuInventory("A").apply_event(ev("1", "RECEIPT", 0, sku="B"), T0)


def test_duplicate_changes_nothing() -> None:
    inventory = SkuInventory("A")
    event = ev("1", "RECEIPT", 0, 5)
    inventory.apply_event(event, T0)
    before = pickle.loads(pickle.dumps(inventory))
    assert inventory.apply_event(event, T0) == Outcome("duplicate")
    assert inventory == before


def test_event_older_than_dedupe_horizon_is_rejected() -> None:
    inventory = SkuInventory("A")
    inventory.apply_event(ev("new", "RECEIPT", 8 * DAY_MS, 5), T0)
    outcome = inventory.apply_event(ev("old", "RECEIPT", 0, 5), T0)
    assert outcome.status == "rejected"
    assert outcome.touched == ()
    assert outcome.reason is not None
    assert "older than the dedupe horizon" in outcome.reason
    assert "7 d" in outcome.reason
    assert set(inventory.positions) == {"DC1"}
    assert inventory.position_quantities("DC1", RULES).on_hand == 5
    inside = inventory.apply_event(ev("in", "RECEIPT", DAY_MS, 1), T0)
    assert inside.status == "applied"


def test_pruned_id_replayed_is_rejected_not_applied_twice() -> None:
    inventory = SkuInventory("A")
    first = ev("first", "RECEIPT", 0, 5)
    inventory.apply_event(first, T0)
    for day in range(1, 10):
        inventory.apply_event(ev(f"d{day}", "RECEIPT", day * DAY_MS, 1), T0)
    assert "first" not in inventory.seen
    assert inventory.apply_event(first, T0).status == "rejected"
    assert inventory.position_quantities("DC1", RULES).on_hand == 14


def test_count_older_than_lateness_horizon_is_rejected_through_the_inventory() -> None:
    inventory = SkuInventory("A")
    for hour in range(0, 40):
        inventory.apply_event(ev(f"r{hour}", "RECEIPT", hour * HOUR, 1), T0)
    outcome = inventory.apply_event(ev("c", "COUNT", 2 * HOUR, 100), T0)
    assert outcome.status == "rejected"
    assert outcome.reason is not None
    assert outcome.reason.startswith("COUNT at ")
    assert "older than the lateness horizon" in outcome.reason
    assert "c" not in inventory.seen
    assert inventory.position_quantities("DC1", RULES).on_hand == 40
    recent = inventory.apply_event(ev("c2", "COUNT", 30 * HOUR, 100), T0)
    assert recent.status == "applied"
    assert inventory.position_quantities("DC1", RULES).on_hand == 109


def test_custom_horizons() -> None:
    inventory = SkuInventory("A", dedupe_horizon_ms=HOUR, lateness_horizon_ms=HOUR)
    inventory.apply_event(ev("a", "RECEIPT", 2 * HOUR, 1), T0)
    assert inventory.apply_event(ev("b", "RECEIPT", 0, 1), T0).status == "rejected"


def test_dedupe_memory_stays_bounded_over_a_month() -> None:
    rng = random.Random(7)
    inventory = SkuInventory("A")
    span = 30 * DAY_MS
    total = 100_000
    peak_seen = 0
    peak_reservations = 0
    for index in range(total):
        at = index * span // total + rng.randrange(0, HOUR)
        location = ("DC1", "S1", "S2")[(index // 4) % 3]
        kind = ("RECEIPT", "SALE", "RESERVATION_CREATED", "RESERVATION_RELEASED")[index % 4]
        fields = {"reservation_id": f"r{index // 4}"} if kind.startswith("RES") else {}
        quantity = 0 if kind == "RESERVATION_RELEASED" else 1
        outcome = inventory.apply_event(ev(f"e{index}", kind, at, quantity, location, **fields), T0)
        assert outcome.status == "applied"
        peak_seen = max(peak_seen, len(inventory.seen))
        peak_reservations = max(
            peak_reservations, sum(len(p.reservations) for p in inventory.positions.values())
        )
    per_day = total // 30
    assert peak_seen <= per_day * (7 + 1) + 100
    assert peak_reservations <= (per_day // 4) * (7 + 1) + 100
    assert max(len(p.deltas) for p in inventory.positions.values()) <= per_day * 2
    assert inventory.position_quantities("DC1", RULES).reserved == 0


def test_expire_closes_and_reports_locations() -> None:
    inventory = SkuInventory("A")
    inventory.apply_event(
        ev("1", "RESERVATION_CREATED", 0, 2, reservation_id="r1", expires_at=T0 + 100), T0
    )
    inventory.apply_event(
        ev("2", "RESERVATION_CREATED", 0, 3, location="S1", reservation_id="r2",
           expires_at=T0 + 50),
        T0,
    )
    inventory.apply_event(ev("3", "RESERVATION_CREATED", 0, 4, reservation_id="r3"), T0)
    assert inventory.next_expiry() == T0 + 50
    assert inventory.expire(T0 + 49) == ()
    assert inventory.expire(T0 + 50) == ("S1",)
    assert inventory.next_expiry() == T0 + 100
    assert inventory.position_quantities("S1", RULES).reserved == 0
    assert inventory.expire(T0 + 1000) == ("DC1",)
    assert inventory.position_quantities("DC1", RULES).reserved == 4
    assert inventory.next_expiry() is None


def test_next_expiry_follows_closes_and_new_reservations() -> None:
    inventory = SkuInventory("A")
    inventory.apply_event(
        ev("1", "RESERVATION_CREATED", 0, 2, reservation_id="r1", expires_at=T0 + 100), T0
    )
    inventory.apply_event(
        ev("2", "RESERVATION_CREATED", 0, 2, location="S1", reservation_id="r2",
           expires_at=T0 + 300),
        T0,
    )
    assert inventory.next_expiry() == T0 + 100
    inventory.apply_event(ev("3", "RESERVATION_FULFILLED", 1, 2, reservation_id="r1"), T0)
    assert inventory.next_expiry() == T0 + 300
    inventory.apply_event(
        ev("4", "RESERVATION_CREATED", 2, 1, reservation_id="r4", expires_at=T0 + 200), T0
    )
    assert inventory.next_expiry() == T0 + 200


def test_created_already_expired_never_counts() -> None:
    inventory = SkuInventory("A")
    outcome = inventory.apply_event(
        ev("1", "RESERVATION_CREATED", 0, 2, reservation_id="r1", expires_at=T0 + 10), T0 + 10
    )
    assert outcome.status == "applied"
    assert inventory.position_quantities("DC1", RULES).reserved == 0
    assert inventory.next_expiry() is None


def test_inventory_pickles_and_keeps_working() -> None:
    inventory = SkuInventory("A")
    inventory.apply_event(ev("1", "RECEIPT", 0, 5), T0)
    inventory.apply_event(
        ev("2", "RESERVATION_CREATED", 0, 2, reservation_id="r1", expires_at=T0 + 100), T0
    )
    restored = pickle.loads(pickle.dumps(inventory))
    assert restored.apply_event(ev("1", "RECEIPT", 0, 5), T0).status == "duplicate"
    assert restored.expire(T0 + 100) == ("DC1",)
    assert restored.position_quantities("DC1", RULES).reserved == 0


def test_a_snapshot_copies_unchanged_positions_and_repickles_changed_ones() -> None:
    inventory = SkuInventory("A")
    for n, location in enumerate(("DC1", "DC2", "S1")):
        inventory.apply_event(ev(f"r{n}", "RECEIPT", n, 5, location=location), T0)
    inventory.apply_event(
        ev("c", "RESERVATION_CREATED", 3, 2, reservation_id="r1", expires_at=T0 + 100), T0)
    first = pickle.loads(pickle.dumps(inventory))  # each position pickled on its own
    assert first == inventory and set(inventory._frames) == {"DC1", "DC2", "S1"}
    frames = dict(inventory._frames)

    inventory.apply_event(ev("s", "SALE", 4, 1, location="DC2"), T0)
    assert list(inventory._changed) == ["DC2"] and "DC2" not in inventory._frames
    second = pickle.loads(pickle.dumps(inventory))  # only the changed one pickled again
    assert second == inventory and second.position_quantities("DC2", RULES).on_hand == 4
    assert inventory._frames["DC1"] is frames["DC1"] and inventory._frames["S1"] is frames["S1"]
    assert inventory._frames["DC2"] != frames["DC2"] and not inventory._changed

    assert inventory.expire(T0 + 100) == ("DC1",)  # expiry changes the positions due
    assert list(inventory._changed) == ["DC1"]
    third = pickle.loads(pickle.dumps(inventory))
    assert third == inventory and third.position_quantities("DC1", RULES).reserved == 0
    restored = dict(third._frames)  # a restored SKU keeps what it was read from
    assert pickle.loads(pickle.dumps(third)) == inventory
    assert all(third._frames[loc] is frame for loc, frame in restored.items())


def test_a_snapshot_of_the_earlier_format_restores_and_frames_its_positions() -> None:
    inventory = SkuInventory("A")
    for n, location in enumerate(("DC1", "DC2")):
        inventory.apply_event(ev(f"r{n}", "RECEIPT", n, 5, location=location), T0)
    dc1, dc2 = inventory.positions["DC1"], inventory.positions["DC2"]
    old = _inventory("A", inventory.dedupe_horizon_ms, inventory.lateness_horizon_ms,
                     [("DC1", pickle.dumps(dc1.fields())), ("DC2", dc2.fields())],
                     inventory.watermark, inventory.seen)
    assert old.positions == inventory.positions
    assert set(old._frames) == {"DC1"} and list(old._changed) == ["DC2"]
    again = pickle.loads(pickle.dumps(old))
    assert again.positions == inventory.positions and set(old._frames) == {"DC1", "DC2"}


def test_a_snapshot_never_leaves_a_position_out() -> None:
    """Should the bookkeeping of what changed ever miss a position, the snapshot pickles
    every position again rather than leave one out."""
    inventory = SkuInventory("A")
    for n, location in enumerate(("DC1", "DC2")):
        inventory.apply_event(ev(f"r{n}", "RECEIPT", n, 5, location=location), T0)
    pickle.dumps(inventory)
    del inventory._frames["DC2"]  # neither pickled nor marked changed
    assert pickle.loads(pickle.dumps(inventory)).positions == inventory.positions


def test_housekeeping_repickles_positions_no_event_touched() -> None:
    """Settling late deltas and dropping tombstones change every position of the SKU,
    the ones the event that moved the watermark did not touch included."""
    inventory = SkuInventory("A", dedupe_horizon_ms=HOUR, lateness_horizon_ms=HOUR)
    inventory.apply_event(ev("a", "RECEIPT", 0, 5), T0)
    inventory.apply_event(ev("b", "SALE", 1, 1), T0)
    inventory.apply_event(
        ev("c", "RESERVATION_CREATED", 2, 1, reservation_id="r1", expires_at=T0 + DAY_MS), T0)
    inventory.apply_event(ev("d", "RESERVATION_RELEASED", 3, 0, reservation_id="r1"), T0)
    pickle.dumps(inventory)
    for n in range(1, 6):  # the watermark moves on at another location only
        inventory.apply_event(ev(f"s{n}", "RECEIPT", n * HOUR, 1, location="S1"), T0)
        assert pickle.loads(pickle.dumps(inventory)) == inventory
    dc1 = inventory.positions["DC1"]
    assert dc1.settled_through is not None and not dc1.deltas and not dc1.closed


class _WrittenByEarlierRelease:
    """Pickles an inventory the way releases before the compact snapshot format did:
    positions through their constructor with Reservation/Transfer objects, ids a dict."""

    def __init__(self, inventory: SkuInventory) -> None:
        self.inventory = inventory

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        inv = self.inventory
        positions = {loc: _OldPosition(p) for loc, p in inv.positions.items()}
        return SkuInventory, (inv.sku, inv.dedupe_horizon_ms, inv.lateness_horizon_ms,
                              positions, inv.watermark, {k: inv.seen.get(k) for k in inv.seen},
                              None, None, None, None, True)


class _OldPosition:
    def __init__(self, position: Position) -> None:
        self.p = position

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Tombstones lived among the reservations and transfers then."""
        p = self.p
        reservations = dict(p.reservations)
        for rid in p.closed or ():
            reservations[rid] = Reservation(status=ReservationStatus.CLOSED,
                                            closed_at=p.closed.get(rid) if p.closed else None)
        transfers = dict(p.transfers)
        for tid in p.received or ():
            transfers[tid] = Transfer(received_at=p.received.get(tid) if p.received else None)
        return Position, (p.as_of, p.count, p.base, p.deltas, p.delta_sum, p.settled_through,
                          p.unsellable, reservations, p.reserved, p.expiries, transfers,
                          p.in_transit)


def test_a_snapshot_in_the_earlier_format_restores_to_the_same_state() -> None:
    inventory = SkuInventory("A")
    inventory.apply_event(ev("1", "RECEIPT", 0, 5), T0)
    inventory.apply_event(
        ev("2", "RESERVATION_CREATED", 0, 2, reservation_id="r1", expires_at=T0 + 100), T0)
    inventory.apply_event(ev("3", "RESERVATION_RELEASED", 0, 0, reservation_id="r0"), T0)
    inventory.apply_event(ev("4", "TRANSFER_RECEIVED", 0, 2, transfer_id="t0",
                             counterparty_location_id="DC2"), T0)
    assert inventory.positions["DC1"].closed and inventory.positions["DC1"].received
    restored = pickle.loads(pickle.dumps(_WrittenByEarlierRelease(inventory)))
    assert restored.positions == inventory.positions
    assert restored.seen == inventory.seen and "2" in restored.seen
    assert restored.apply_event(ev("2", "RESERVATION_CREATED", 0, 2, reservation_id="r1"),
                                T0).status == "duplicate"
    assert pickle.loads(pickle.dumps(restored)).positions == inventory.positions
