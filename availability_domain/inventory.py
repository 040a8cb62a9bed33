"""Every position of one SKU plus that SKU's event-id dedupe.

The dataflow keys its state by SKU, so both ends of a transfer (same SKU) live in one
:class:`SkuInventory` and a TRANSFER_SHIPPED is applied atomically to both.

Horizons are measured in event time against the SKU's watermark (the largest
occurred_at seen). An event older than ``watermark - dedupe_horizon`` can no longer be
told apart from a replay, because its id may have been forgotten, so it is rejected
rather than risk applying it twice. Housekeeping (forgetting ids, folding old deltas,
dropping tombstones) runs only when the watermark has moved by a fraction of a
horizon, so its cost is amortised over many events.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from availability_contracts.times import DAY_MS, duration, iso_ms
from availability_domain.dedupe import RememberedIds
from availability_domain.events import EventType, InventoryEvent
from availability_domain.position import Position, _position
from availability_domain.rules import Rules

DEFAULT_DEDUPE_HORIZON_MS = 7 * DAY_MS
DEFAULT_LATENESS_HORIZON_MS = DAY_MS
FRAME_PROTOCOL = 4
"""Pickle protocol of a position's own bytes in a snapshot (4: one-byte string lengths)."""
HOUSEKEEPING_FRACTION = 8
"""Housekeeping runs each time the watermark advances by horizon / this."""

OutcomeStatus = Literal["applied", "duplicate", "rejected"]

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def saturate(value: int) -> int:
    """Clamp to int64, the contracts' ``long``: published numbers saturate, never wrap."""
    if value > INT64_MAX:
        return INT64_MAX
    if value < INT64_MIN:
        return INT64_MIN
    return value


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :meth:`SkuInventory.apply_event` did; ``touched`` drives snapshot publishing."""

    status: OutcomeStatus
    reason: str | None = None
    touched: tuple[str, ...] = ()


DUPLICATE = Outcome("duplicate")


class PositionQuantities(NamedTuple):
    """The published quantities of one position.

    A NamedTuple, not a dataclass: it is built for every eligible position whenever a
    pooled channel is recomputed, and doubles as the publisher's change-detection value.
    """

    on_hand: int
    unsellable: int
    reserved: int
    in_transit: int
    safety_stock: int
    ats: int
    as_of: int


@dataclass(slots=True)
class SkuInventory:
    """All positions of one SKU and its dedupe memory: one Bytewax state value per key."""

    sku: str
    dedupe_horizon_ms: int = DEFAULT_DEDUPE_HORIZON_MS
    lateness_horizon_ms: int = DEFAULT_LATENESS_HORIZON_MS
    positions: dict[str, Position] = field(default_factory=dict)
    watermark: int | None = None
    seen: RememberedIds = field(default_factory=RememberedIds)
    """Applied event_id -> occurred_at, pruned past the dedupe horizon."""
    _settle_due: int | None = None
    _prune_due: int | None = None
    _housekeeping_due: int | None = None
    _next_expiry: int | None = None
    _next_expiry_stale: bool = False
    _frames: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    """location_id -> that position pickled on its own, as of the last snapshot.

    A recovery snapshot pickles the whole SKU every epoch in which any of its positions
    changed, and an epoch changes few of a SKU's positions. A snapshot pickles the
    positions changed since the last one again, each on its own, and then this dict as
    it is: the unchanged positions cost no Python code per snapshot, and a position
    is pickled once per epoch in which it changed. Every method below that may change a
    position drops its frame and marks it changed first (housekeeping, which visits them
    all, marks them all); nothing outside this class changes a position.
    ``Position.next_expiry`` only drops heap entries of reservations that no longer
    count, so a position restored with them behaves the same."""
    _changed: dict[str, None] = field(default_factory=dict, repr=False, compare=False)
    """Positions changed (or new) since the last snapshot, in the order they changed."""

    def __post_init__(self) -> None:
        if not isinstance(self.seen, RememberedIds):  # a snapshot from before the chunks
            self.seen = RememberedIds(self.seen)
        if not self._changed and not self._frames:
            self._changed = dict.fromkeys(self.positions)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        positions, frames = self.positions, self._frames
        for location_id in self._changed:
            frames[location_id] = pickle.dumps(positions[location_id].fields(), FRAME_PROTOCOL)
        self._changed = {}
        if len(frames) != len(positions):  # never leave a position out
            self._change_all()
            return self.__reduce__()
        return _framed_inventory, (self.sku, self.dedupe_horizon_ms, self.lateness_horizon_ms,
                                   frames, (), self.watermark, self.seen,
                                   self._settle_due, self._prune_due,
                                   self._housekeeping_due, self._next_expiry,
                                   self._next_expiry_stale)

    def _change(self, location_id: str) -> None:
        """Before a position changes: its frame is stale."""
        self._frames.pop(location_id, None)
        self._changed[location_id] = None

    def apply_event(self, event: InventoryEvent, now_ms: int) -> Outcome:
        """Fold one event in; duplicates and rejected events change nothing.

        ``now_ms`` (engine wall clock) only decides whether a RESERVATION_CREATED is
        already expired; other reservations expire through :meth:`expire`.
        """
        if event.sku != self.sku:
            raise ValueError(f"event {event.event_id} is for sku {event.sku!r}, not {self.sku!r}")
        kind = event.event_type
        if kind is EventType.TRANSFER_SHIPPED and (
            event.counterparty_location_id is None or event.transfer_id is None
        ):
            raise ValueError(f"TRANSFER_SHIPPED {event.event_id} lacks transfer fields")
        if event.event_id in self.seen:
            return DUPLICATE
        occurred_at = event.occurred_at
        watermark = self.watermark
        if watermark is not None and occurred_at < watermark - self.dedupe_horizon_ms:
            return Outcome(
                "rejected",
                f"event at {iso_ms(occurred_at)} is older than the dedupe horizon "
                f"({duration(self.dedupe_horizon_ms)} before the latest event of sku "
                f"{self.sku!r} at {iso_ms(watermark)}): it can no longer be deduplicated",
            )

        location_id = event.location_id
        self._change(location_id)
        position = self.positions.get(location_id)
        if position is None:
            position = self.positions[location_id] = Position(as_of=occurred_at)
        reservation_event = kind in _RESERVATION_EVENTS
        before = position.next_expiry() if reservation_event else None
        rejection = position.apply(event, now_ms)
        if rejection is not None:
            return Outcome("rejected", rejection)
        if reservation_event:
            self._note_expiry(before, position.next_expiry())
        if kind is EventType.TRANSFER_SHIPPED:
            destination_id = event.counterparty_location_id or ""
            self._change(destination_id)
            destination = self.positions.get(destination_id)
            if destination is None:
                destination = self.positions[destination_id] = Position(as_of=occurred_at)
            destination.ship_in(
                event.transfer_id or "", occurred_at, event.event_id, event.quantity
            )
        touched = event.locations()

        self.seen.add(event.event_id, occurred_at)
        if watermark is None or occurred_at > watermark:
            self.watermark = occurred_at
            due = self._housekeeping_due
            if due is None or occurred_at >= due:
                self._housekeeping(occurred_at)
        return Outcome("applied", None, touched)

    def expire(self, now_ms: int) -> tuple[str, ...]:
        """Stop counting reservations expired at ``now_ms``; return the locations changed."""
        next_expiry = self.next_expiry()
        if next_expiry is None or next_expiry > now_ms:
            return ()
        changed = []
        for location_id, position in self.positions.items():
            if position.has_due_expiry(now_ms):
                self._change(location_id)
                if position.expire(now_ms):
                    changed.append(location_id)
        touched = tuple(changed)
        self._next_expiry_stale = True
        return touched

    def locations_due(self, by_ms: int) -> set[str]:
        """Locations with a reservation due to expire by ``by_ms`` (not yet expired)."""
        expiry = self.next_expiry()
        if expiry is None or expiry > by_ms:
            return set()
        return {location_id for location_id, position in self.positions.items()
                if position.has_due_expiry(by_ms)}

    def next_expiry(self) -> int | None:
        """Earliest expires_at of a reservation that still counts, at any location."""
        if self._next_expiry_stale:  # positions drop heap entries that no longer count
            expiries = [
                expiry
                for position in self.positions.values()
                if (expiry := position.next_expiry()) is not None
            ]
            self._next_expiry = min(expiries) if expiries else None
            self._next_expiry_stale = False
        return self._next_expiry

    def _note_expiry(self, before: int | None, after: int | None) -> None:
        """Keep the SKU-wide next expiry exact without scanning positions per event."""
        if before == after or self._next_expiry_stale:
            return
        current = self._next_expiry
        if after is not None and (current is None or after < current):
            self._next_expiry = after
        elif before is not None and before == current:
            self._next_expiry_stale = True

    def position_quantities(self, location_id: str, rules: Rules) -> PositionQuantities:
        """Published quantities of one position (KeyError if it has none)."""
        position = self.positions[location_id]
        on_hand = position.base + position.delta_sum
        reserved = position.reserved
        safety_stock = rules.safety_stock(self.sku, location_id)
        available = on_hand - reserved - safety_stock
        quantities = PositionQuantities(
            on_hand,
            position.unsellable,
            reserved,
            position.in_transit,
            safety_stock,
            available if available > 0 else 0,
            position.as_of,
        )
        if not INT64_MIN < on_hand < INT64_MAX or available >= INT64_MAX or not (
                INT64_MIN < reserved < INT64_MAX and INT64_MIN < position.in_transit < INT64_MAX
                and INT64_MIN < position.unsellable < INT64_MAX):
            quantities = PositionQuantities(*(saturate(q) for q in quantities))
        return quantities

    def _change_all(self) -> None:
        self._frames.clear()
        self._changed = dict.fromkeys(self.positions)

    def _housekeeping(self, watermark: int) -> None:
        """Fold late deltas, forget old ids and tombstones, each once per horizon / 8."""
        lateness_step = max(1, self.lateness_horizon_ms // HOUSEKEEPING_FRACTION)
        if self._settle_due is not None and watermark >= self._settle_due:
            cutoff = watermark - self.lateness_horizon_ms
            self._change_all()
            for position in self.positions.values():
                position.settle(cutoff)
            self._settle_due = None
        if self._settle_due is None:
            self._settle_due = watermark + lateness_step

        dedupe_step = max(1, self.dedupe_horizon_ms // HOUSEKEEPING_FRACTION)
        if self._prune_due is not None and watermark >= self._prune_due:
            cutoff = watermark - self.dedupe_horizon_ms
            self.seen.forget_before(cutoff)
            self._change_all()
            for position in self.positions.values():
                position.prune(cutoff)
            self._prune_due = None
        if self._prune_due is None:
            self._prune_due = watermark + dedupe_step
        self._housekeeping_due = min(self._settle_due, self._prune_due)


def _framed_inventory(sku: str, dedupe_horizon_ms: int, lateness_horizon_ms: int,
                      frames: dict[str, bytes],
                      inline: Iterable[tuple[str, tuple[Any, ...]]], *state: object
                      ) -> SkuInventory:
    """A SKU from :meth:`SkuInventory.__reduce__` (a name snapshots refer to: keep it):
    each position as its own pickled bytes, kept for the next snapshot; ``inline``
    positions (a snapshot of the earlier format) are pickled on their own at the next."""
    rebuilt = {location_id: _position(*pickle.loads(frame))
               for location_id, frame in frames.items()}
    changed: dict[str, None] = {}
    for location_id, fields in inline:
        rebuilt[location_id] = _position(*fields)
        changed[location_id] = None
    inventory = SkuInventory(sku, dedupe_horizon_ms, lateness_horizon_ms, rebuilt,
                             *state)  # type: ignore[arg-type]
    inventory._frames = dict(frames)
    inventory._changed = changed
    return inventory


def _inventory(sku: str, dedupe_horizon_ms: int, lateness_horizon_ms: int,
               positions: list[tuple[str, bytes | tuple[Any, ...]]], *state: object
               ) -> SkuInventory:
    """A SKU from a snapshot written before :func:`_framed_inventory` (keep it): each
    position as its own pickled bytes, or inline."""
    frames = {location_id: frame for location_id, frame in positions
              if isinstance(frame, bytes)}
    inline = [(location_id, frame) for location_id, frame in positions
              if not isinstance(frame, bytes)]
    return _framed_inventory(sku, dedupe_horizon_ms, lateness_horizon_ms, frames, inline,
                             *state)


_RESERVATION_EVENTS = frozenset(
    {
        EventType.RESERVATION_CREATED,
        EventType.RESERVATION_RELEASED,
        EventType.RESERVATION_FULFILLED,
    }
)
