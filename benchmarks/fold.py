"""The pure-domain fold outside Bytewax: the reference tables, the hand loop and Quix.

Why one module: the baseline and the peer must run exactly the project's business code
(:class:`SkuInventory` + :class:`SnapshotPublisher`, the project's Avro codec), so the
only thing a benchmark compares is the machinery around it. State is a dict keyed by
SKU, as in the engine (a transfer touches two locations of one SKU).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from typing import Any

from availability_contracts.codec import Codec
from availability_contracts.schemas import CHANNEL_SCHEMA, DEAD_LETTER_SCHEMA, POSITION_SCHEMA
from availability_domain.events import InventoryEvent
from availability_domain.inventory import SkuInventory
from availability_domain.reference import QUANTITIES, ChannelTable, PositionTable, tables
from availability_domain.rules import Rules
from availability_domain.snapshots import ChannelSnapshot, PositionSnapshot, SnapshotPublisher

Output = tuple[int, str, bytes]
"""(0 positions / 1 channels / 2 dlq, key, Avro value)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SkuFold:
    """Per-SKU inventories and publishers, plus the expiry timers of open reservations."""

    def __init__(self, rules: Rules, codec: Codec | None = None) -> None:
        self.rules = rules
        self.codec = codec or Codec()
        self.inventories: dict[str, SkuInventory] = {}
        self.publishers: dict[str, SnapshotPublisher] = {}
        self._timers: list[tuple[int, str]] = []
        self._armed: dict[str, int] = {}
        """sku -> earliest expiry with a timer in the heap (one live timer per SKU)."""

    def apply(self, event: InventoryEvent, now: int) -> tuple[str, tuple[str, ...] | str]:
        """Fold one event: (status, touched locations or the rejection reason)."""
        inventory = self.inventories.get(event.sku)
        if inventory is None:
            inventory = self.inventories[event.sku] = SkuInventory(event.sku)
            self.publishers[event.sku] = SnapshotPublisher()
        outcome = inventory.apply_event(event, now)
        if outcome.status == "rejected":
            return "rejected", outcome.reason or "rejected"
        return outcome.status, outcome.touched

    def publish(self, sku: str, touched: Iterable[str], now: int) -> list[Output]:
        """Encoded snapshots whose value changed; re-arms the SKU's expiry timer."""
        inventory = self.inventories[sku]
        positions, channels = self.publishers[sku].publish(inventory, touched, self.rules,
                                                           now, now)
        expiry = inventory.next_expiry()
        if expiry is not None:
            armed = self._armed.get(sku)
            if armed is None or expiry < armed:
                self._armed[sku] = expiry
                heapq.heappush(self._timers, (expiry, sku))
        return self.encode(positions, channels)

    def expire_due(self, now: int) -> list[Output]:
        """Snapshots of SKUs whose reservations expired by ``now`` (stale timers skipped)."""
        out: list[Output] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, sku = heapq.heappop(timers)
            if self._armed.get(sku) != due:
                continue  # superseded by an earlier timer of the same SKU
            del self._armed[sku]
            touched = self.inventories[sku].expire(now)
            out += self.publish(sku, touched, now)  # also re-arms the next expiry
        return out

    def encode(self, positions: list[PositionSnapshot], channels: list[ChannelSnapshot]
               ) -> list[Output]:
        encode = self.codec.encode
        out: list[Output] = [(0, snap.key, encode(POSITION_SCHEMA, snap.to_record(), ""))
                             for snap in positions]
        out += [(1, snap.key, encode(CHANNEL_SCHEMA, snap.to_record(), ""))
                for snap in channels]
        return out

    def dead_letter(self, key: bytes | None, value: bytes | None, topic: str, partition: int,
                    offset: int, reason: str) -> Output:
        record: dict[str, Any] = {
            "reason": reason, "original_key": key, "original_value": value,
            "source_topic": topic, "source_partition": partition, "source_offset": offset,
            "rejected_at": now_ms(),
        }
        return 2, key.decode(errors="replace") if key else "", self.codec.encode(
            DEAD_LETTER_SCHEMA, record, "")


class ReferenceFold:
    """Every event applied exactly once, in generation order, in this process.

    The tables are the latest value per key the engine must end with; they are built by
    publishing every SKU once at the end, which gives the same final values as
    publishing after each event (channels are pure functions of the positions).
    """

    def __init__(self, rules: Rules, now: int | None = None) -> None:
        self.rules = rules
        self.now = now if now is not None else now_ms()
        self.inventories: dict[str, SkuInventory] = {}
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0

    def add(self, event: InventoryEvent) -> None:
        inventory = self.inventories.get(event.sku)
        if inventory is None:
            inventory = self.inventories[event.sku] = SkuInventory(event.sku)
        status = inventory.apply_event(event, self.now).status
        if status == "applied":
            self.applied += 1
        elif status == "duplicate":
            self.duplicates += 1
        else:
            self.rejected += 1

    def tables(self) -> tuple[PositionTable, ChannelTable]:
        return tables(self.inventories.values(), self.rules, self.now)


def position_row(record: dict[str, Any]) -> tuple[int, ...]:
    return tuple(record[q] for q in QUANTITIES)
