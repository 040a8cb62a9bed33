"""The reference model: every event applied exactly once, in the order given, in one
process, then every SKU published once.

Tests compare the engine's tables (on the topics, in an API replica, in a consumer
that keeps the newest version) with these; the benchmarks check their systems against
them. Order and batching cannot matter to the final numbers (that is the domain's
promise, proved by the property tests), so publishing once at the end gives the same
latest value per key as publishing after each event.
"""

from __future__ import annotations

from collections.abc import Iterable

from availability_domain.events import InventoryEvent
from availability_domain.inventory import (
    DEFAULT_DEDUPE_HORIZON_MS,
    DEFAULT_LATENESS_HORIZON_MS,
    PositionQuantities,
    SkuInventory,
)
from availability_domain.rules import Rules
from availability_domain.snapshots import SnapshotPublisher

QUANTITIES: tuple[str, ...] = PositionQuantities._fields
"""The compared fields of a position (version and computed_at depend on how often a
system publishes, so they are not compared)."""

PositionTable = dict[str, tuple[int, ...]]
"""Position key -> its QUANTITIES."""
ChannelTable = dict[str, int]
"""Channel key -> ats."""


def fold_events(events: Iterable[InventoryEvent], now_ms: int = 0, *,
                dedupe_horizon_ms: int = DEFAULT_DEDUPE_HORIZON_MS,
                lateness_horizon_ms: int = DEFAULT_LATENESS_HORIZON_MS,
                ) -> dict[str, SkuInventory]:
    """Every SKU's inventory after ``events``; ``now_ms`` is the clock expiry uses."""
    inventories: dict[str, SkuInventory] = {}
    for event in events:
        inventory = inventories.get(event.sku)
        if inventory is None:
            inventory = inventories[event.sku] = SkuInventory(
                event.sku, dedupe_horizon_ms, lateness_horizon_ms)
        inventory.apply_event(event, now_ms)
    return inventories


def tables(inventories: Iterable[SkuInventory], rules: Rules, now_ms: int = 0
           ) -> tuple[PositionTable, ChannelTable]:
    """The latest position and channel numbers of ``inventories`` under ``rules``."""
    positions: PositionTable = {}
    channels: ChannelTable = {}
    for inventory in inventories:
        published = SnapshotPublisher().publish(inventory, list(inventory.positions), rules,
                                                now_ms, now_ms)
        for position in published[0]:
            positions[position.key] = tuple(getattr(position, q) for q in QUANTITIES)
        for channel in published[1]:
            channels[channel.key] = channel.ats
    return positions, channels


def reference_tables(events: Iterable[InventoryEvent], rules: Rules, now_ms: int = 0
                     ) -> tuple[PositionTable, ChannelTable]:
    """What the engine must end with after ``events``."""
    return tables(fold_events(events, now_ms).values(), rules, now_ms)
