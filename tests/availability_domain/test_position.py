"""One position's fold: as-of COUNTs, order-free reservations and transfers."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import pytest

from availability_contracts.times import iso_ms
from availability_domain.events import InventoryEvent, parse_event
from availability_domain.position import Position, ReservationStatus

T0 = 1_700_000_000_000
NOW = T0
HOUR = 3_600_000


def ev(event_id: str, kind: str, at: int, quantity: int = 1, **fields: Any) -> InventoryEvent:
    record = {
        "event_id": event_id,
        "event_type": kind,
        "occurred_at": T0 + at,
        "source": "test",
        "sku": "A",
        "location_id": "DC1",
        "quantity": quantity,
        **fields,
    }
    if kind == "ADJUSTMENT":
        record.setdefault("reason", "cycle")
    if kind.startswith("TRANSFER"):
        record.setdefault("counterparty_location_id", "DC2")
    if kind == "RESERVATION_CREATED":
        record.setdefault("channel", "web")
    return parse_event(record)


def fold(*events: InventoryEvent, now: int = NOW) -> Position:
    position = Position(as_of=events[0].occurred_at)
    for event in events:
        assert position.apply(event, now) is None
    return position


def test_every_on_hand_delta_type() -> None:
    position = fold(
        ev("1", "RECEIPT", 0, 10),
        ev("2", "ADJUSTMENT", 1, -2),
        ev("3", "SALE", 2, 3),
        ev("4", "RETURN", 3, 4),
        ev("5", "RETURN", 4, 5, restockable=False),
        ev("6", "TRANSFER_SHIPPED", 5, 1, transfer_id="t1"),
        ev("7", "TRANSFER_RECEIVED", 6, 6, transfer_id="t2"),
        ev("8", "RESERVATION_FULFILLED", 7, 2, reservation_id="r1"),
    )
    assert position.on_hand == 10 - 2 - 3 + 4 - 1 + 6 - 2
    assert position.unsellable == 5
    assert position.as_of == T0 + 7


def test_count_sets_on_hand_as_of_its_time() -> None:
    position = fold(ev("1", "RECEIPT", 0, 10), ev("2", "COUNT", 5, 7), ev("3", "SALE", 6, 2))
    assert position.on_hand == 5


def test_late_delta_inside_the_count_is_ignored_but_moves_as_of() -> None:
    position = fold(ev("c", "COUNT", 10, 7), ev("late", "RECEIPT", 3, 100))
    assert position.on_hand == 7
    assert position.as_of == T0 + 10
    same_time = fold(ev("c", "COUNT", 10, 7), ev("tie", "SALE", 10, 1))
    assert same_time.on_hand == 7


def test_delta_after_count_arriving_first_is_kept() -> None:
    position = fold(
        ev("after", "SALE", 20, 2), ev("before", "RECEIPT", 1, 9), ev("c", "COUNT", 10, 7)
    )
    assert position.on_hand == 5


def test_stale_count_is_ignored() -> None:
    position = fold(ev("new", "COUNT", 10, 7), ev("old", "COUNT", 5, 50), ev("d", "RECEIPT", 6, 1))
    assert position.on_hand == 7
    assert position.count == (T0 + 10, "new", 7)


def test_equal_time_counts_larger_event_id_wins_in_any_order() -> None:
    events = [ev("c-a", "COUNT", 10, 3), ev("c-b", "COUNT", 10, 8), ev("d", "RECEIPT", 11, 1)]
    for order in itertools.permutations(events):
        assert fold(*order).on_hand == 9


def test_equal_time_count_after_folding_rebases_exactly() -> None:
    position = fold(ev("c-a", "COUNT", 0, 3), ev("d", "RECEIPT", 1, 2))
    position.settle(T0 + 2)
    assert position.settled_through == T0 + 1
    assert position.count_rejection(T0) is None
    assert position.apply(ev("c-b", "COUNT", 0, 10), NOW) is None
    assert position.on_hand == 12


def test_settle_folds_old_deltas_without_changing_on_hand() -> None:
    position = fold(*(ev(f"r{i}", "RECEIPT", i * HOUR, 1) for i in range(30)))
    position.settle(T0 + 24 * HOUR)
    assert position.on_hand == 30
    assert len(position.deltas) == 6
    assert position.settled_through == T0 + 23 * HOUR


def test_count_older_than_folded_deltas_is_rejected_and_changes_nothing() -> None:
    position = fold(ev("r1", "RECEIPT", 0, 5), ev("r2", "RECEIPT", 2 * HOUR, 5))
    position.settle(T0 + 3 * HOUR)
    before = pickle.dumps(position)
    reason = position.apply(ev("c", "COUNT", HOUR, 1), NOW)
    assert reason == (
        f"COUNT at {iso_ms(T0 + HOUR)} is older than the lateness horizon "
        f"(on_hand deltas through {iso_ms(T0 + 2 * HOUR)} are already folded)"
    )
    assert reason is not None and reason.startswith("COUNT at 2023-11-14T23:13:20.000Z is older")
    assert pickle.dumps(position) == before
    assert position.apply(ev("c2", "COUNT", 2 * HOUR, 1), NOW) is None
    assert position.on_hand == 1


def test_reservation_lifecycle() -> None:
    position = fold(ev("c", "RESERVATION_CREATED", 0, 3, reservation_id="r1"))
    assert position.reserved == 3
    position.apply(ev("x", "RESERVATION_RELEASED", 1, 0, reservation_id="r1"), NOW)
    assert position.reserved == 0
    position.apply(ev("y", "RESERVATION_RELEASED", 2, 0, reservation_id="r1"), NOW)
    assert position.reserved == 0
    assert "r1" not in position.reservations  # a tombstone now, with the latest close
    assert position.closed is not None and position.closed.get("r1") == T0 + 2


@pytest.mark.parametrize("closing", ["RESERVATION_RELEASED", "RESERVATION_FULFILLED"])
def test_close_before_created_leaves_a_tombstone(closing: str) -> None:
    events = [
        ev("r", "RECEIPT", 0, 10),
        ev("c", "RESERVATION_CREATED", 1, 3, reservation_id="r1"),
        ev("z", closing, 2, 3, reservation_id="r1"),
    ]
    folded = [fold(*order) for order in itertools.permutations(events)]
    results = {(position.on_hand, position.reserved) for position in folded}
    expected_on_hand = 7 if closing == "RESERVATION_FULFILLED" else 10
    assert results == {(expected_on_hand, 0)}


def test_fulfilled_takes_on_hand_in_every_state() -> None:
    unknown = fold(ev("f", "RESERVATION_FULFILLED", 1, 2, reservation_id="r9"))
    assert unknown.on_hand == -2
    closed = fold(
        ev("c", "RESERVATION_CREATED", 0, 2, reservation_id="r1"),
        ev("x", "RESERVATION_RELEASED", 1, 0, reservation_id="r1"),
        ev("f", "RESERVATION_FULFILLED", 2, 2, reservation_id="r1"),
    )
    assert (closed.on_hand, closed.reserved) == (-2, 0)
    expired = fold(
        ev("c", "RESERVATION_CREATED", 0, 2, reservation_id="r1", expires_at=T0 + 5),
        ev("f", "RESERVATION_FULFILLED", 9, 2, reservation_id="r1"),
        now=T0 + 10,
    )
    assert (expired.on_hand, expired.reserved) == (-2, 0)


def test_earliest_created_counts_whichever_arrives_first() -> None:
    early = ev("b", "RESERVATION_CREATED", 1, 4, reservation_id="r1")
    late = ev("a", "RESERVATION_CREATED", 2, 9, reservation_id="r1")
    assert fold(early, late).reserved == 4
    assert fold(late, early).reserved == 4
    same_time = [
        ev("b", "RESERVATION_CREATED", 1, 4, reservation_id="r1"),
        ev("a", "RESERVATION_CREATED", 1, 9, reservation_id="r1"),
    ]
    assert {fold(*o).reserved for o in itertools.permutations(same_time)} == {9}


def test_created_already_expired_never_counts() -> None:
    position = fold(
        ev("c", "RESERVATION_CREATED", 0, 4, reservation_id="r1", expires_at=NOW - 1)
    )
    assert position.reserved == 0
    assert position.next_expiry() is None
    assert position.reservations["r1"].status is ReservationStatus.EXPIRED


def test_expire_and_next_expiry() -> None:
    position = fold(
        ev("1", "RESERVATION_CREATED", 0, 1, reservation_id="r1", expires_at=NOW + 100),
        ev("2", "RESERVATION_CREATED", 0, 2, reservation_id="r2", expires_at=NOW + 50),
        ev("3", "RESERVATION_CREATED", 0, 4, reservation_id="r3"),
    )
    assert (position.reserved, position.next_expiry()) == (7, NOW + 50)
    assert not position.expire(NOW + 49)
    assert position.expire(NOW + 50)
    assert (position.reserved, position.next_expiry()) == (5, NOW + 100)
    position.apply(ev("4", "RESERVATION_RELEASED", 1, 0, reservation_id="r1"), NOW)
    assert (position.reserved, position.next_expiry()) == (4, None)
    assert not position.expire(NOW + 1000)


def test_earlier_created_replaces_an_expired_winner() -> None:
    early = ev("a", "RESERVATION_CREATED", 1, 4, reservation_id="r1", expires_at=NOW + 100)
    late = ev("b", "RESERVATION_CREATED", 2, 9, reservation_id="r1", expires_at=NOW - 1)
    assert fold(early, late).reserved == 4
    assert fold(late, early).reserved == 4


def test_transfer_destination_lifecycle_and_short_receipt() -> None:
    position = Position(as_of=T0)
    position.ship_in("t1", T0, "s", 10)
    assert (position.in_transit, position.on_hand) == (10, 0)
    position.apply(ev("r", "TRANSFER_RECEIVED", 5, 7, transfer_id="t1"), NOW)
    assert (position.in_transit, position.on_hand) == (0, 7)
    position.apply(ev("r2", "TRANSFER_RECEIVED", 6, 3, transfer_id="t1"), NOW)
    assert (position.in_transit, position.on_hand) == (0, 10)


def test_received_before_shipped_adds_no_in_transit() -> None:
    position = fold(ev("r", "TRANSFER_RECEIVED", 5, 7, transfer_id="t1"))
    position.ship_in("t1", T0 + 1, "s", 10)
    assert (position.in_transit, position.on_hand) == (0, 7)
    assert position.as_of == T0 + 5


def test_earliest_shipped_counts() -> None:
    first = Position(as_of=T0)
    first.ship_in("t1", T0 + 2, "b", 9)
    first.ship_in("t1", T0 + 1, "a", 4)
    second = Position(as_of=T0)
    second.ship_in("t1", T0 + 1, "a", 4)
    second.ship_in("t1", T0 + 2, "b", 9)
    assert first.in_transit == second.in_transit == 4


def test_prune_forgets_old_tombstones_only() -> None:
    position = fold(
        ev("1", "RESERVATION_RELEASED", 0, 0, reservation_id="old"),
        ev("2", "RESERVATION_CREATED", 0, 1, reservation_id="open"),
        ev("3", "RESERVATION_RELEASED", 10, 0, reservation_id="recent"),
        ev("4", "TRANSFER_RECEIVED", 0, 1, transfer_id="t-old"),
        ev("5", "RESERVATION_CREATED", 0, 1, reservation_id="exp", expires_at=NOW + 5),
    )
    position.ship_in("t-open", T0, "s", 2)
    position.expire(NOW + 5)
    position.prune(T0 + 6)
    assert set(position.reservations) == {"open"}
    assert position.closed is not None and set(position.closed) == {"recent"}
    assert set(position.transfers) == {"t-open"}
    assert position.received is not None and set(position.received) == set()
    assert position.expiries == []
    assert (position.reserved, position.in_transit) == (1, 2)
