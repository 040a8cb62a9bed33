"""State of one position (sku, location_id), folded from events in any order.

Everything here is written so that the final state depends on the *set* of events
applied, not on their arrival order:

* **on_hand is as-of.** The latest COUNT (largest ``(occurred_at, event_id)``) sets the
  base; on_hand is that base plus every on_hand delta strictly newer than the count. A
  delta at or before the count time is already inside it. Deltas are kept in a min-heap
  so a newer COUNT can drop the ones it covers; deltas older than the lateness horizon
  are folded into the base (``settled_through`` is the newest folded time). A COUNT
  older than ``settled_through`` would need a folded delta back and is rejected.
* **Reservations.** RELEASED or FULFILLED closes a reservation whether it is open,
  expired or not yet seen (a tombstone); a CREATED for a closed reservation is ignored.
  FULFILLED always takes its quantity from on_hand, at its own occurred_at, whatever
  the reservation's state, otherwise on_hand would depend on arrival order. "A CREATED
  for a reservation already known is ignored" is read order-free: until the
  reservation is closed, the CREATED with the smallest ``(occurred_at, event_id)`` is
  the one that counts, so it does not matter which of two CREATEDs arrived first.
* **Expiry** uses the engine wall clock passed in as ``now_ms`` (never read here). An
  expired reservation stops counting but is not closed: an earlier CREATED (smaller
  key) may still replace its winner, again so that arrival order does not matter.
* **Transfers** live at the destination. SHIPPED opens one with in_transit (smallest
  key wins, ignored once closed); RECEIVED closes it whole, short or over, and adds its
  own quantity to on_hand; RECEIVED before SHIPPED leaves a tombstone so the late
  SHIPPED adds no in_transit (the origin still loses the units: that is the origin
  position's on_hand delta).

Closed reservations and transfers are kept as tombstones until the dedupe horizon has
passed their closing time, after which no event that could reopen them is accepted.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from availability_contracts.times import iso_ms
from availability_domain.dedupe import TOMBSTONE_CHUNK, RememberedIds
from availability_domain.events import EventType, InventoryEvent


class ReservationStatus(StrEnum):
    OPEN = "open"
    EXPIRED = "expired"
    CLOSED = "closed"


@dataclass(slots=True)
class Reservation:
    """One reservation; ``created`` is the winning CREATED's ``(occurred_at, event_id)``."""

    quantity: int = 0
    expires_at: int | None = None
    created: tuple[int, str] | None = None
    status: ReservationStatus = ReservationStatus.OPEN
    closed_at: int | None = None
    """Latest RELEASED/FULFILLED event time; None while not closed."""

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return Reservation, (self.quantity, self.expires_at, self.created, self.status,
                             self.closed_at)

    @property
    def is_open(self) -> bool:
        return self.status is ReservationStatus.OPEN

    @property
    def is_closed(self) -> bool:
        return self.status is ReservationStatus.CLOSED


@dataclass(slots=True)
class Transfer:
    """One inbound transfer at its destination; open while ``received_at`` is None."""

    quantity: int = 0
    shipped: tuple[int, str] | None = None
    received_at: int | None = None

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return Transfer, (self.quantity, self.shipped, self.received_at)

    @property
    def is_open(self) -> bool:
        return self.received_at is None


@dataclass(slots=True)
class Position:
    """Quantities of one (sku, location_id); see the module docstring for the rules."""

    as_of: int
    """Latest occurred_at of any event applied here (duplicates and rejections excluded)."""
    count: tuple[int, str, int] | None = None
    """Latest applied COUNT as (occurred_at, event_id, quantity)."""
    base: int = 0
    deltas: list[tuple[int, int]] = field(default_factory=list)
    """Min-heap of (occurred_at, quantity) on_hand deltas newer than the count, not folded."""
    delta_sum: int = 0
    settled_through: int | None = None
    unsellable: int = 0
    reservations: dict[str, Reservation] = field(default_factory=dict)
    reserved: int = 0
    expiries: list[tuple[int, str]] = field(default_factory=list)
    """Min-heap of (expires_at, reservation_id); stale entries are skipped lazily."""
    transfers: dict[str, Transfer] = field(default_factory=dict)
    """Open transfers (shipped, not received)."""
    in_transit: int = 0
    closed: RememberedIds | None = None
    """Tombstones: closed reservation id -> its latest RELEASED/FULFILLED time (made on
    the first one: most positions of a catalogue never hold any)."""
    received: RememberedIds | None = None
    """Tombstones: received transfer id -> its latest RECEIVED time."""

    def __post_init__(self) -> None:
        """Tombstones restored from a snapshot of the earlier format move to their own
        memories (a snapshot pickles those in sealed chunks, see ``dedupe``)."""
        if self.reservations:
            for reservation_id in [rid for rid, r in self.reservations.items() if r.is_closed]:
                closed_at = self.reservations.pop(reservation_id).closed_at
                self._closed().add(reservation_id, closed_at if closed_at is not None else 0)
        if self.transfers:
            for transfer_id in [tid for tid, t in self.transfers.items() if not t.is_open]:
                received_at = self.transfers.pop(transfer_id).received_at
                self._received().add(transfer_id,
                                     received_at if received_at is not None else 0)

    def _closed(self) -> RememberedIds:
        if self.closed is None:
            self.closed = RememberedIds(chunk=TOMBSTONE_CHUNK)
        return self.closed

    def _received(self) -> RememberedIds:
        if self.received is None:
            self.received = RememberedIds(chunk=TOMBSTONE_CHUNK)
        return self.received

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Positional state with reservations and transfers as plain tuples: recovery
        pickles every touched position each epoch, a best seller's positions hold
        thousands of them, and letting pickle reduce each object was most of the
        pause (the generated dataclass pickling is slower still)."""
        return _position, self.fields()

    def fields(self) -> tuple[object, ...]:
        """The arguments of :func:`_position` that rebuild this position."""
        return (
            self.as_of, self.count, self.base, self.deltas, self.delta_sum,
            self.settled_through, self.unsellable,
            [(rid, r.quantity, r.expires_at, r.created, r.status, r.closed_at)
             for rid, r in self.reservations.items()],
            self.reserved, self.expiries,
            [(tid, t.quantity, t.shipped, t.received_at) for tid, t in self.transfers.items()],
            self.in_transit, self.closed, self.received)

    @property
    def on_hand(self) -> int:
        return self.base + self.delta_sum

    def apply(self, event: InventoryEvent, now_ms: int) -> str | None:
        """Apply an event at this location; return a rejection reason or None.

        For TRANSFER_SHIPPED this is the origin side; the destination side is
        :meth:`ship_in`. A rejected event changes nothing.
        """
        kind = event.event_type
        occurred_at = event.occurred_at
        if kind is EventType.COUNT:
            rejection = self.count_rejection(occurred_at)
            if rejection is not None:
                return rejection
            self.apply_count(occurred_at, event.event_id, event.quantity)
        elif kind in _ADDS:
            self.add_delta(occurred_at, event.quantity)
        elif kind in _SUBTRACTS:
            self.add_delta(occurred_at, -event.quantity)
        elif kind is EventType.RETURN:
            if event.restockable:
                self.add_delta(occurred_at, event.quantity)
            else:
                self.unsellable += event.quantity
        elif kind is EventType.TRANSFER_RECEIVED:
            self.receive(_required(event.transfer_id), occurred_at, event.quantity)
        elif kind is EventType.RESERVATION_CREATED:
            self.create_reservation(
                _required(event.reservation_id),
                occurred_at,
                event.event_id,
                event.quantity,
                event.expires_at,
                now_ms,
            )
        elif kind is EventType.RESERVATION_RELEASED:
            self.close_reservation(_required(event.reservation_id), occurred_at)
        elif kind is EventType.RESERVATION_FULFILLED:
            self.add_delta(occurred_at, -event.quantity)
            self.close_reservation(_required(event.reservation_id), occurred_at)
        else:
            raise ValueError(f"unhandled event type {kind}")
        self.touch(occurred_at)
        return None

    def touch(self, occurred_at: int) -> None:
        """Record that an event at ``occurred_at`` was applied here (drives ``as_of``)."""
        if occurred_at > self.as_of:
            self.as_of = occurred_at

    def add_delta(self, occurred_at: int, quantity: int) -> None:
        """An on_hand change at ``occurred_at``; ignored if the latest COUNT covers it."""
        if self.count is not None and occurred_at <= self.count[0]:
            return
        heapq.heappush(self.deltas, (occurred_at, quantity))
        self.delta_sum += quantity

    def count_rejection(self, occurred_at: int) -> str | None:
        """Why a COUNT at ``occurred_at`` cannot be applied exactly, or None."""
        if self.count is not None and occurred_at <= self.count[0]:
            return None
        if self.settled_through is not None and occurred_at < self.settled_through:
            return (
                f"COUNT at {iso_ms(occurred_at)} is older than the lateness horizon "
                f"(on_hand deltas through {iso_ms(self.settled_through)} are already folded)"
            )
        return None

    def apply_count(self, occurred_at: int, event_id: str, quantity: int) -> None:
        """Re-base on_hand on a COUNT unless a later one is already applied."""
        current = self.count
        if current is not None:
            if (occurred_at, event_id) < (current[0], current[1]):
                return
            if occurred_at == current[0]:
                self.base += quantity - current[2]
                self.count = (occurred_at, event_id, quantity)
                return
        deltas = self.deltas
        while deltas and deltas[0][0] <= occurred_at:
            self.delta_sum -= heapq.heappop(deltas)[1]
        self.count = (occurred_at, event_id, quantity)
        self.base = quantity

    def settle(self, cutoff: int) -> None:
        """Fold deltas older than ``cutoff`` (watermark - lateness horizon) into the base."""
        deltas = self.deltas
        while deltas and deltas[0][0] < cutoff:
            occurred_at, quantity = heapq.heappop(deltas)
            self.base += quantity
            self.delta_sum -= quantity
            if self.settled_through is None or occurred_at > self.settled_through:
                self.settled_through = occurred_at

    def create_reservation(
        self,
        reservation_id: str,
        occurred_at: int,
        event_id: str,
        quantity: int,
        expires_at: int | None,
        now_ms: int,
    ) -> None:
        """A CREATED counts if it is the earliest for a reservation that is not closed."""
        if self.closed is not None and reservation_id in self.closed:
            return
        key = (occurred_at, event_id)
        reservation = self.reservations.get(reservation_id)
        if reservation is None:
            reservation = Reservation()
            self.reservations[reservation_id] = reservation
        elif reservation.created is not None and reservation.created <= key:
            return
        elif reservation.is_open:
            self.reserved -= reservation.quantity
        reservation.quantity = quantity
        reservation.expires_at = expires_at
        reservation.created = key
        if expires_at is not None and expires_at <= now_ms:
            reservation.status = ReservationStatus.EXPIRED
            return
        reservation.status = ReservationStatus.OPEN
        self.reserved += quantity
        if expires_at is not None:
            heapq.heappush(self.expiries, (expires_at, reservation_id))

    def close_reservation(self, reservation_id: str, occurred_at: int) -> None:
        """RELEASED/FULFILLED: close it, leaving a tombstone (also if it was never seen)."""
        closed = self._closed()
        closed_at = closed.get(reservation_id)
        if closed_at is not None:
            if occurred_at > closed_at:
                closed.set_later(reservation_id, occurred_at)
            return
        reservation = self.reservations.pop(reservation_id, None)
        if reservation is not None and reservation.is_open:
            self.reserved -= reservation.quantity
        closed.add(reservation_id, occurred_at)

    def has_due_expiry(self, now_ms: int) -> bool:
        """Whether :meth:`expire` at ``now_ms`` would change anything (its heap included)."""
        return bool(self.expiries) and self.expiries[0][0] <= now_ms

    def expire(self, now_ms: int) -> bool:
        """Stop counting open reservations with ``expires_at <= now_ms``; True if any did."""
        changed = False
        expiries = self.expiries
        while expiries and expiries[0][0] <= now_ms:
            expires_at, reservation_id = heapq.heappop(expiries)
            if self._expiry_is_live(expires_at, reservation_id):
                reservation = self.reservations[reservation_id]
                reservation.status = ReservationStatus.EXPIRED
                self.reserved -= reservation.quantity
                changed = True
        return changed

    def next_expiry(self) -> int | None:
        """The earliest ``expires_at`` among reservations that still count."""
        expiries = self.expiries
        while expiries:
            expires_at, reservation_id = expiries[0]
            if self._expiry_is_live(expires_at, reservation_id):
                return expires_at
            heapq.heappop(expiries)
        return None

    def ship_in(self, transfer_id: str, occurred_at: int, event_id: str, quantity: int) -> None:
        """Destination side of TRANSFER_SHIPPED: the earliest SHIPPED of an open transfer."""
        self.touch(occurred_at)
        if self.received is not None and transfer_id in self.received:
            return
        key = (occurred_at, event_id)
        transfer = self.transfers.get(transfer_id)
        if transfer is None:
            self.transfers[transfer_id] = Transfer(quantity=quantity, shipped=key)
            self.in_transit += quantity
        elif transfer.shipped is None or key < transfer.shipped:
            self.in_transit += quantity - transfer.quantity
            transfer.quantity = quantity
            transfer.shipped = key

    def receive(self, transfer_id: str, occurred_at: int, quantity: int) -> None:
        """TRANSFER_RECEIVED: close the transfer whole and add what actually arrived."""
        self.add_delta(occurred_at, quantity)
        received = self._received()
        received_at = received.get(transfer_id)
        if received_at is not None:
            if occurred_at > received_at:
                received.set_later(transfer_id, occurred_at)
            return
        transfer = self.transfers.pop(transfer_id, None)
        if transfer is not None:
            self.in_transit -= transfer.quantity
        received.add(transfer_id, occurred_at)

    def prune(self, tombstone_cutoff: int) -> None:
        """Forget reservations/transfers closed before ``tombstone_cutoff`` and stale expiries."""
        reservations = self.reservations
        for reservation_id in [
            reservation_id
            for reservation_id, reservation in reservations.items()
            if _tombstone_time(reservation) < tombstone_cutoff
        ]:
            del reservations[reservation_id]
        for tombstones in (self.closed, self.received):
            if tombstones is not None:
                tombstones.forget_before(tombstone_cutoff)
        live = [entry for entry in self.expiries if self._expiry_is_live(*entry)]
        if len(live) != len(self.expiries):
            heapq.heapify(live)
            self.expiries = live

    def _expiry_is_live(self, expires_at: int, reservation_id: str) -> bool:
        reservation = self.reservations.get(reservation_id)
        return (
            reservation is not None
            and reservation.is_open
            and reservation.expires_at == expires_at
        )


_NEVER = float("inf")


def _tombstone_time(reservation: Reservation) -> float:
    """Event time after which a reservation may be forgotten; infinite while open.

    An expired one has no closing event: its CREATED time or expiry, whichever is later.
    """
    if reservation.status is ReservationStatus.CLOSED and reservation.closed_at is not None:
        return reservation.closed_at
    if reservation.status is ReservationStatus.EXPIRED and reservation.created is not None:
        return max(reservation.created[0], reservation.expires_at or 0)
    return _NEVER


def _required(value: str | None) -> str:
    if value is None:
        raise ValueError("event is missing an id that parse_event guarantees")
    return value


_ADDS = frozenset({EventType.RECEIPT, EventType.ADJUSTMENT})
_SUBTRACTS = frozenset({EventType.SALE, EventType.TRANSFER_SHIPPED})


def _position(as_of: int, count: tuple[int, str, int] | None, base: int,
              deltas: list[tuple[int, int]], delta_sum: int, settled_through: int | None,
              unsellable: int, reservations: list[tuple[Any, ...]], reserved: int,
              expiries: list[tuple[int, str]], transfers: list[tuple[Any, ...]],
              in_transit: int, closed: RememberedIds | None = None,
              received: RememberedIds | None = None) -> Position:
    """A position from :meth:`Position.fields` (a name snapshots refer to: keep it).

    The arguments are a snapshot format too: a SKU's snapshot carries the pickled
    fields of positions unchanged since an earlier snapshot, possibly one written by an
    older release, so new arguments go at the end with defaults."""
    return Position(as_of, count, base, deltas, delta_sum, settled_through, unsellable,
                    {rid: Reservation(*fields) for rid, *fields in reservations}, reserved,
                    expiries, {tid: Transfer(*fields) for tid, *fields in transfers},
                    in_transit, closed, received)
