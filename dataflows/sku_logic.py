"""The Bytewax state of one SKU: folds its events, emits changed snapshots.

Thin adapter between Bytewax's stateful operator and the pure domain
(:class:`SkuInventory` and :class:`SnapshotPublisher`); every business rule lives in
``dataflows.domain``. State is keyed by SKU so a transfer's origin and destination
and every channel pooling over the SKU's locations sit in one place.
"""

from __future__ import annotations

import pickle
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from bytewax.operators import StatefulBatchLogic

from dataflows.domain.events import InventoryEvent
from dataflows.domain.inventory import SkuInventory
from dataflows.domain.rules import Rules
from dataflows.domain.snapshots import ChannelSnapshot, PositionSnapshot, SnapshotPublisher
from dataflows.kafka_sink import OutgoingRecord
from dataflows.kafka_source import SourceRecord
from dataflows.metrics import count_events

InventoryFactory = Callable[[str], SkuInventory]
Encoder = Callable[[list[PositionSnapshot], list[ChannelSnapshot], int], list[OutgoingRecord]]
Rejector = Callable[[SourceRecord, str], OutgoingRecord]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SkuState:
    """Picklable per-SKU state: the positions and what was last published for them."""

    __slots__ = ("inventory", "publisher")

    def __init__(self, inventory: SkuInventory, publisher: SnapshotPublisher) -> None:
        self.inventory = inventory
        self.publisher = publisher

    def __getstate__(self) -> tuple[SkuInventory, SnapshotPublisher]:
        return self.inventory, self.publisher

    def __setstate__(self, state: tuple[SkuInventory, SnapshotPublisher]) -> None:
        self.inventory, self.publisher = state


class SkuAvailabilityLogic(StatefulBatchLogic[tuple[InventoryEvent, SourceRecord],
                                              OutgoingRecord, bytes]):
    def __init__(self, state: SkuState | None, new_inventory: InventoryFactory, rules: Rules,
                 encode: Encoder, reject: Rejector) -> None:
        self._state = state
        self.new_inventory = new_inventory
        self.rules = rules
        self.encode = encode
        self.reject = reject

    def on_batch(self, values: list[tuple[InventoryEvent, SourceRecord]]
                 ) -> tuple[Iterable[OutgoingRecord], bool]:
        if self._state is None:
            self._state = SkuState(self.new_inventory(values[0][0].sku), SnapshotPublisher())
        inventory = self._state.inventory
        now = now_ms()
        touched: set[str] = set()
        rejected: list[OutgoingRecord] = []
        results: Tally[tuple[str, str]] = Tally()
        oldest = values[0][1].timestamp_ms
        for event, origin in values:
            outcome = inventory.apply_event(event, now)
            results[event.event_type.value, outcome.status] += 1
            if origin.timestamp_ms < oldest:
                oldest = origin.timestamp_ms
            if outcome.status == "applied":
                touched.update(outcome.touched)
            elif outcome.status == "rejected":
                rejected.append(self.reject(origin, outcome.reason or "rejected"))
        count_events(results)
        return self._publish(touched, now, oldest) + rejected, self.RETAIN

    def on_notify(self) -> tuple[Iterable[OutgoingRecord], bool]:
        if self._state is None:
            return [], self.RETAIN
        now = now_ms()
        touched = self._state.inventory.expire(now)
        return self._publish(set(touched), now, -1), self.RETAIN

    def notify_at(self) -> datetime | None:
        if self._state is None:
            return None
        expiry = self._state.inventory.next_expiry()
        if expiry is None:
            return None
        return datetime.fromtimestamp(expiry / 1000, tz=UTC)

    def snapshot(self) -> bytes:
        return pickle.dumps(self._state, protocol=pickle.HIGHEST_PROTOCOL)

    def _publish(self, touched: set[str], now: int, origin_ms: int) -> list[OutgoingRecord]:
        if not touched or self._state is None:
            return []
        positions, channels = self._state.publisher.publish(
            self._state.inventory, touched, self.rules, now, now
        )
        return self.encode(positions, channels, origin_ms)
