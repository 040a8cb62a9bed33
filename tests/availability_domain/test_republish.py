"""Republishing a SKU under changed rules or after a restore: what changes, what is
deleted, and that versions only ever grow."""

from __future__ import annotations

import itertools
from typing import Any

from availability_contracts.keys import channel_key
from availability_domain.channels import channel_availability
from availability_domain.events import InventoryEvent, parse_event
from availability_domain.inventory import SkuInventory
from availability_domain.rules import Rules, parse_rules
from availability_domain.snapshots import SnapshotPublisher, count_versions

T0 = 1_700_000_000_000
BASE: dict[str, Any] = {
    "locations": {
        "DC1": {"type": "dc", "safety_stock": 1},
        "S1": {"type": "store", "tags": ["pickup"]},
        "S2": {"type": "store", "tags": ["pickup"]},
    },
    "channels": {
        "web": {"location_types": ["dc"], "buffer": 1},
        "amazon": {"locations": ["DC1"], "allocation": 0.5},
        "pickup": {"location_tags": ["pickup"], "per_location": True},
    },
}


def rules_with(**changes: Any) -> Rules:
    data: dict[str, Any] = {"locations": dict(BASE["locations"]),
                            "channels": dict(BASE["channels"])}
    for section, value in changes.items():
        data[section] = value
    return parse_rules(data, "test")


def receipt(event_id: str, location: str, quantity: int) -> InventoryEvent:
    return parse_event({"event_id": event_id, "event_type": "RECEIPT", "occurred_at": T0,
                        "source": "t", "sku": "A", "location_id": location,
                        "quantity": quantity})


def stocked(rules: Rules) -> tuple[SkuInventory, SnapshotPublisher]:
    inventory = SkuInventory("A")
    publisher = SnapshotPublisher()
    for number, (location, quantity) in enumerate([("DC1", 40), ("S1", 5), ("S2", 7)]):
        outcome = inventory.apply_event(receipt(f"e{number}", location, quantity), T0)
        publisher.publish(inventory, outcome.touched, rules, T0, T0)
    return inventory, publisher


def expected_channels(inventory: SkuInventory, rules: Rules) -> dict[str, int]:
    quantities = {loc: inventory.position_quantities(loc, rules) for loc in inventory.positions}
    return {
        channel_key(found.channel, found.sku, found.location_id): found.ats
        for rule in rules.channels.values()
        for found in channel_availability(rule, "A", quantities, rules)
    }


def published_channels(publisher: SnapshotPublisher) -> dict[str, int]:
    return {channel_key(name, "A", location): value[0][0]
            for (name, location), value in publisher.channels.items()}


def test_unchanged_rules_republish_nothing_unless_asked_for_everything() -> None:
    inventory, publisher = stocked(BASE_RULES)
    quiet = publisher.republish(inventory, BASE_RULES, T0, T0, count_versions, everything=False)
    assert quiet == ([], [], [])
    loud = publisher.republish(inventory, BASE_RULES, T0, T0, count_versions, everything=True)
    assert {snap.key for snap in loud.positions} == {"A|DC1", "A|S1", "A|S2"}
    assert {snap.key for snap in loud.channels} == set(expected_channels(inventory, BASE_RULES))
    assert loud.deleted_channels == []


BASE_RULES = rules_with()
CHANGES = {
    "cap": rules_with(channels={**BASE["channels"],
                                "web": {"location_types": ["dc"], "buffer": 1,
                                        "max_quantity": 10}}),
    "allocation": rules_with(channels={**BASE["channels"],
                                       "amazon": {"locations": ["DC1"], "allocation": 0.25}}),
    "safety_stock": rules_with(locations={**BASE["locations"],
                                          "DC1": {"type": "dc", "safety_stock": 6}}),
    "tags": rules_with(locations={**BASE["locations"], "S2": {"type": "store"}}),
    "added": rules_with(channels={**BASE["channels"], "stores": {"location_types": ["store"]}}),
    "removed": rules_with(channels={"web": BASE["channels"]["web"],
                                    "pickup": BASE["channels"]["pickup"]}),
}


def test_each_kind_of_rules_change_republishes_exactly_what_it_changes() -> None:
    for name, changed in CHANGES.items():
        inventory, publisher = stocked(BASE_RULES)
        before = published_channels(publisher)
        before_positions = dict(publisher.positions)
        result = publisher.republish(inventory, changed, T0, T0, count_versions,
                                     everything=False)
        want = expected_channels(inventory, changed)
        assert published_channels(publisher) == want, name
        assert {snap.key: snap.ats for snap in result.channels} == {
            key: ats for key, ats in want.items() if before.get(key) != ats}, name
        assert sorted(result.deleted_channels) == sorted(set(before) - set(want)), name
        for snap in result.positions:
            assert before_positions[snap.location_id][0] != tuple(snap)[2:9], name
        assert result != ([], [], []), f"{name}: a change that changes nothing"


def test_removed_channel_and_ineligible_location_become_tombstones() -> None:
    inventory, publisher = stocked(BASE_RULES)
    removed = publisher.republish(inventory, CHANGES["removed"], T0, T0, count_versions,
                                  everything=False)
    assert removed.deleted_channels == ["amazon|A"]
    inventory, publisher = stocked(BASE_RULES)
    untagged = publisher.republish(inventory, CHANGES["tags"], T0, T0, count_versions,
                                   everything=False)
    assert untagged.deleted_channels == ["pickup|A|S2"]
    assert ("pickup", "S2") not in publisher.channels


def test_new_channel_gets_a_number_for_the_sku() -> None:
    inventory, publisher = stocked(BASE_RULES)
    added = publisher.republish(inventory, CHANGES["added"], T0, T0, count_versions,
                                everything=False)
    assert {snap.key: snap.ats for snap in added.channels} == {"stores|A": 12}


def test_versions_only_grow_through_republishing() -> None:
    """With a clock-like version source, as the engine's, even a key deleted and created
    again continues above its old versions."""
    inventory, publisher = stocked(BASE_RULES)
    ticks = itertools.count(1000)
    seen: dict[str, int] = {}

    def clock(previous: int) -> int:
        return max(previous + 1, next(ticks))

    def check(snapshots: list[Any]) -> None:
        for snap in snapshots:
            assert snap.version > seen.get(snap.key, 0)
            seen[snap.key] = snap.version

    for rules in [*CHANGES.values(), BASE_RULES]:
        result = publisher.republish(inventory, rules, T0, T0, clock, everything=True)
        check(result.positions)
        check(result.channels)
