"""Published snapshot records and the per-SKU publisher that versions them (DESIGN 5).

Field names are a contract with ``schemas/avro``. Snapshots go to compacted topics and
consumers drop any version not newer than theirs, so the publisher emits a key only
when its value changed and numbers versions per key, starting at 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dataflows.domain.channels import (
    ChannelAvailability,
    LocationContribution,
    availability,
)
from dataflows.domain.events import KEY_DELIMITER
from dataflows.domain.inventory import PositionQuantities, SkuInventory
from dataflows.domain.rules import Rules

__all__ = [
    "ChannelSnapshot",
    "LocationContribution",
    "PositionSnapshot",
    "SnapshotPublisher",
]


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    sku: str
    location_id: str
    on_hand: int
    unsellable: int
    reserved: int
    in_transit: int
    safety_stock: int
    ats: int
    as_of: int
    version: int
    computed_at: int

    @property
    def key(self) -> str:
        return f"{self.sku}{KEY_DELIMITER}{self.location_id}"

    def to_record(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "location_id": self.location_id,
            "on_hand": self.on_hand,
            "unsellable": self.unsellable,
            "reserved": self.reserved,
            "in_transit": self.in_transit,
            "safety_stock": self.safety_stock,
            "ats": self.ats,
            "as_of": self.as_of,
            "version": self.version,
            "computed_at": self.computed_at,
        }


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    channel: str
    sku: str
    location_id: str | None
    """None for a pooled channel."""
    ats: int
    as_of: int
    version: int
    computed_at: int
    locations: tuple[LocationContribution, ...]

    @property
    def key(self) -> str:
        return channel_key(self.channel, self.sku, self.location_id)

    def to_record(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "sku": self.sku,
            "location_id": self.location_id,
            "ats": self.ats,
            "as_of": self.as_of,
            "version": self.version,
            "computed_at": self.computed_at,
            "locations": [
                {"location_id": c.location_id, "ats": c.ats, "in_transit": c.in_transit}
                for c in self.locations
            ],
        }


def channel_key(channel: str, sku: str, location_id: str | None) -> str:
    """``channel|sku`` when pooled, ``channel|sku|location_id`` per location."""
    if location_id is None:
        return f"{channel}{KEY_DELIMITER}{sku}"
    return f"{channel}{KEY_DELIMITER}{sku}{KEY_DELIMITER}{location_id}"


@dataclass(slots=True)
class SnapshotPublisher:
    """Last published value and version per key, for one SKU's state.

    Values are stored as plain tuples (every field but version and computed_at), so
    the publisher pickles small and compares cheaply.
    """

    positions: dict[str, tuple[PositionQuantities, int]] = field(default_factory=dict)
    """location_id -> (last published quantities, version). A position's channels are
    recomputed from these: an untouched position cannot have changed since it was
    published, and a position whose value did not change cannot move a channel."""
    channels: dict[tuple[str, str | None], tuple[tuple[Any, ...], int]] = field(
        default_factory=dict
    )
    """(channel, location_id or None) -> (value, version)."""

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return SnapshotPublisher, (self.positions, self.channels)

    def publish(
        self,
        inventory: SkuInventory,
        touched: Iterable[str],
        rules: Rules,
        now_ms: int,
        computed_at: int,
    ) -> tuple[list[PositionSnapshot], list[ChannelSnapshot]]:
        """Snapshots whose value changed because of ``touched`` locations.

        Expiry is brought up to ``now_ms`` first (the locations it changes count as
        touched), so a snapshot never counts a reservation that has already expired.
        Only channels of a location whose value changed are recomputed.
        """
        sku = inventory.sku
        affected = dict.fromkeys(touched)
        expired = inventory.expire(now_ms)
        if expired:
            affected.update(dict.fromkeys(expired))
        positions = inventory.positions
        published = self.positions
        position_snapshots: list[PositionSnapshot] = []
        changed: list[str] = []
        channel_names: set[str] = set()
        for location_id in affected:
            if location_id not in positions:
                continue
            quantities = inventory.position_quantities(location_id, rules)
            previous = published.get(location_id)
            if previous is not None and previous[0] == quantities:
                continue
            version = 1 if previous is None else previous[1] + 1
            published[location_id] = (quantities, version)
            changed.append(location_id)
            channel_names.update(rules.channel_names_for(location_id))
            position_snapshots.append(
                PositionSnapshot(sku, location_id, *quantities, version, computed_at)
            )

        channel_snapshots: list[ChannelSnapshot] = []
        if not channel_names:
            return position_snapshots, channel_snapshots
        for rule in rules.channels.values():
            name = rule.name
            if name not in channel_names:
                continue
            if rule.per_location:
                for location_id in changed:
                    if name in rules.channel_names_for(location_id):
                        only = [(location_id, published[location_id][0])]
                        self._emit(availability(rule, sku, only, location_id), computed_at,
                                   channel_snapshots)
                continue
            eligible = [
                (location_id, value)
                for location_id, (value, _) in published.items()
                if name in rules.channel_names_for(location_id)
            ]
            self._emit(availability(rule, sku, eligible), computed_at, channel_snapshots)
        return position_snapshots, channel_snapshots

    def _emit(
        self, result: ChannelAvailability, computed_at: int, out: list[ChannelSnapshot]
    ) -> None:
        key = (result.channel, result.location_id)
        value = (result.ats, result.as_of, result.locations)
        previous = self.channels.get(key)
        if previous is not None and previous[0] == value:
            return
        version = 1 if previous is None else previous[1] + 1
        self.channels[key] = (value, version)
        out.append(
            ChannelSnapshot(
                channel=result.channel,
                sku=result.sku,
                location_id=result.location_id,
                ats=result.ats,
                as_of=result.as_of,
                version=version,
                computed_at=computed_at,
                locations=result.locations,
            )
        )
