"""Snapshot records and the change-only, versioned publisher."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availability_domain import snapshots
from availability_domain.channels import LocationContribution
from availability_domain.events import InventoryEvent, parse_event
from availability_domain.inventory import PositionQuantities, SkuInventory
from availability_domain.rules import ChannelRule, Rules, parse_rules
from availability_domain.snapshots import ChannelSnapshot, PositionSnapshot, SnapshotPublisher

T0 = 1_700_000_000_000
RULES = parse_rules(
    {
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
    },
    "test",
)


def ev(event_id: str, kind: str, quantity: int = 1, location: str = "DC1",
       at: int = 0, **fields: Any) -> InventoryEvent:
    record = {
        "event_id": event_id,
        "event_type": kind,
        "occurred_at": T0 + at,
        "source": "test",
        "sku": "A",
        "location_id": location,
        "quantity": quantity,
        **fields,
    }
    if kind == "RESERVATION_CREATED":
        record.setdefault("channel", "web")
    return parse_event(record)


class Harness:
    def __init__(self, rules: Rules = RULES) -> None:
        self.inventory = SkuInventory("A")
        self.publisher = SnapshotPublisher()
        self.rules = rules
        self.clock = 0

    def apply(
        self, event: InventoryEvent, now: int = T0
    ) -> tuple[list[PositionSnapshot], list[ChannelSnapshot]]:
        outcome = self.inventory.apply_event(event, now)
        return self.publish(outcome.touched, now)

    def publish(
        self, touched: tuple[str, ...], now: int = T0
    ) -> tuple[list[PositionSnapshot], list[ChannelSnapshot]]:
        self.clock += 1
        return self.publisher.publish(self.inventory, touched, self.rules, now, self.clock)


def test_first_publish_emits_version_one() -> None:
    harness = Harness()
    positions, channels = harness.apply(ev("1", "RECEIPT", 10))
    assert positions == [
        PositionSnapshot(
            sku="A", location_id="DC1", on_hand=10, unsellable=0, reserved=0, in_transit=0,
            safety_stock=1, ats=9, as_of=T0, version=1, computed_at=1,
        )
    ]
    assert [(c.key, c.ats, c.version) for c in channels] == [("web|A", 8, 1), ("amazon|A", 4, 1)]


def test_nothing_changed_means_no_snapshot() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    assert harness.publish(("DC1",)) == ([], [])
    assert harness.apply(ev("1", "RECEIPT", 10)) == ([], [])
    assert harness.publish(()) == ([], [])


def test_versions_increase_by_one_per_key() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    positions, channels = harness.apply(ev("2", "SALE", 1))
    assert [(p.key, p.version) for p in positions] == [("A|DC1", 2)]
    assert [(c.key, c.ats, c.version) for c in channels] == [
        ("web|A", 7, 2),
        ("amazon|A", 4, 2),
    ]
    positions, channels = harness.apply(ev("3", "RECEIPT", 5, location="S1"))
    assert [(p.key, p.version) for p in positions] == [("A|S1", 1)]
    assert [(c.key, c.version) for c in channels] == [("pickup|A|S1", 1)]
    positions, channels = harness.apply(ev("4", "SALE", 1, at=6))
    assert [(p.key, p.version) for p in positions] == [("A|DC1", 3)]
    assert [(c.key, c.ats, c.version) for c in channels] == [
        ("web|A", 6, 3),
        ("amazon|A", 3, 3),
    ]


def test_position_change_without_channel_change() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    positions, channels = harness.apply(ev("2", "RETURN", 2, restockable=False))
    assert [(p.unsellable, p.version) for p in positions] == [(2, 2)]
    assert channels == []


def test_as_of_alone_changes_the_value() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    positions, channels = harness.apply(ev("2", "RETURN", 2, at=9, restockable=False))
    assert positions[0].as_of == T0 + 9
    assert [c.as_of for c in channels] == [T0 + 9, T0 + 9]


def test_per_location_channel_publishes_only_touched_locations() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 3, location="S1"))
    harness.apply(ev("2", "RECEIPT", 4, location="S2"))
    positions, channels = harness.apply(ev("3", "SALE", 1, location="S2", at=1))
    assert [p.key for p in positions] == ["A|S2"]
    assert [(c.key, c.location_id, c.ats, c.version) for c in channels] == [
        ("pickup|A|S2", "S2", 3, 2)
    ]


def test_only_affected_channels_are_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    computed: list[str] = []
    real = snapshots.SnapshotPublisher._emit

    def spy(self: snapshots.SnapshotPublisher, rule: ChannelRule, *args: Any) -> None:
        computed.append(rule.name)
        real(self, rule, *args)

    monkeypatch.setattr(snapshots.SnapshotPublisher, "_emit", spy)
    harness.apply(ev("2", "RECEIPT", 1, location="S1"))
    assert computed == ["pickup"]
    computed.clear()
    harness.apply(ev("3", "RECEIPT", 1, location="X9"))
    assert computed == []
    harness.apply(ev("4", "SALE", 1))
    assert computed == ["web", "amazon"]


def test_a_forced_location_is_published_again_with_its_channels_under_fresh_versions(
        ) -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    harness.apply(ev("2", "RECEIPT", 3, location="S1"))
    harness.apply(ev("3", "RECEIPT", 4, location="S2"))
    harness.clock += 1
    positions, channels = harness.publisher.publish(
        harness.inventory, (), RULES, T0, harness.clock, forced={"DC1", "S1"})
    assert sorted((p.key, p.on_hand, p.version) for p in positions) == [("A|DC1", 10, 2),
                                                                        ("A|S1", 3, 2)]
    assert sorted((c.key, c.ats, c.version) for c in channels) == [
        ("amazon|A", 4, 2), ("pickup|A|S1", 3, 2), ("web|A", 8, 2)]
    assert harness.publish(("DC1", "S1", "S2")) == ([], [])  # the record holds them


def test_transfer_publishes_both_ends() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    positions, channels = harness.apply(
        ev("2", "TRANSFER_SHIPPED", 4, transfer_id="t1", counterparty_location_id="S1", at=1)
    )
    assert [(p.key, p.on_hand, p.in_transit) for p in positions] == [
        ("A|DC1", 6, 0),
        ("A|S1", 0, 4),
    ]
    assert [c.key for c in channels] == ["web|A", "amazon|A", "pickup|A|S1"]


def test_publish_brings_expiry_up_to_now() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    positions, _ = harness.apply(
        ev("2", "RESERVATION_CREATED", 4, reservation_id="r1", expires_at=T0 + 100)
    )
    assert positions[0].reserved == 4
    assert harness.publish((), now=T0 + 99) == ([], [])
    positions, channels = harness.publish((), now=T0 + 100)
    assert [(p.reserved, p.ats, p.version) for p in positions] == [(0, 9, 3)]
    assert [c.key for c in channels] == ["web|A", "amazon|A"]


def test_records_match_the_schema_fields() -> None:
    position = PositionSnapshot("A", "DC1", 5, 1, 2, 3, 1, 2, T0, 4, T0 + 5)
    assert position.key == "A|DC1"
    assert position.to_record() == {
        "sku": "A", "location_id": "DC1", "on_hand": 5, "unsellable": 1, "reserved": 2,
        "in_transit": 3, "safety_stock": 1, "ats": 2, "as_of": T0, "version": 4,
        "computed_at": T0 + 5,
    }
    contributions = (LocationContribution("DC1", 2, 3),)
    pooled = ChannelSnapshot("web", "A", None, 2, T0, 1, T0, contributions)
    assert pooled.key == "web|A"
    assert pooled.to_record() == {
        "channel": "web", "sku": "A", "location_id": None, "ats": 2, "as_of": T0,
        "version": 1, "computed_at": T0,
        "locations": [{"location_id": "DC1", "ats": 2, "in_transit": 3}],
    }
    per_location = ChannelSnapshot("pickup", "A", "S1", 2, T0, 1, T0, ())
    assert per_location.key == "pickup|A|S1"


def test_publisher_pickles_with_its_versions() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    harness.publisher = pickle.loads(pickle.dumps(harness.publisher))
    harness.inventory = pickle.loads(pickle.dumps(harness.inventory))
    positions, _ = harness.apply(ev("2", "SALE", 1, at=1))
    assert positions[0].version == 2


def _published_state(publisher: SnapshotPublisher) -> tuple[object, ...]:
    return publisher.positions, publisher.channels, publisher._position_records


def test_a_restored_publisher_holds_the_same_record_and_carries_on_identically() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    harness.apply(ev("2", "RECEIPT", 4, location="S1", at=1))
    harness.apply(ev("3", "RECEIPT", 2, location="S2", at=2))
    restored = pickle.loads(pickle.dumps(harness.publisher))
    assert _published_state(restored) == _published_state(harness.publisher)
    twin = Harness()
    twin.inventory, twin.publisher, twin.clock = (
        pickle.loads(pickle.dumps(harness.inventory)), restored, harness.clock)
    more = [ev("4", "SALE", 1, at=3), ev("5", "SALE", 1, location="S1", at=4)]
    assert [harness.apply(event) for event in more] == [twin.apply(event) for event in more]
    assert _published_state(twin.publisher) == _published_state(harness.publisher)


def test_a_channel_key_the_rules_drop_leaves_the_snapshot_record_too() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 3, location="S1"))
    without_pickup = parse_rules({"locations": {"DC1": {"type": "dc"}, "S1": {"type": "store"},
                                                "S2": {"type": "store"}},
                                  "channels": {"web": {"location_types": ["dc"]}}}, "test")
    result = harness.publisher.republish(harness.inventory, without_pickup, T0, 9,
                                         snapshots.count_versions, everything=False)
    assert result.deleted_channels == ["pickup|A|S1"]
    restored = pickle.loads(pickle.dumps(harness.publisher))
    assert ("pickup", "S1") not in restored.channels
    assert _published_state(restored) == _published_state(harness.publisher)


def test_a_publisher_snapshot_from_before_the_fixed_width_records_still_loads() -> None:
    harness = Harness()
    harness.apply(ev("1", "RECEIPT", 10))
    harness.apply(ev("2", "RECEIPT", 4, location="S1", at=1))
    publisher = harness.publisher
    restored = snapshots._publisher(  # what unpickling such a snapshot calls
        {location: (tuple(quantities), version)
         for location, (quantities, version) in publisher.positions.items()},
        publisher.channels)
    assert _published_state(restored) == _published_state(publisher)


def test_quantities_beyond_32_bits_survive_the_snapshot() -> None:
    harness = Harness()
    for n in range(3):
        harness.apply(ev(f"r{n}", "RECEIPT", 1_000_000_000, at=n))
    harness.apply(ev("s", "SALE", 1, at=3))
    restored = pickle.loads(pickle.dumps(harness.publisher))
    assert restored.positions["DC1"][0].on_hand == 2_999_999_999
    assert _published_state(restored) == _published_state(harness.publisher)


POOL_LOCATIONS = [f"S{n:02d}" for n in range(12)] + ["DC1"]
POOL_RULES = parse_rules(
    {
        "locations": {location: {"type": "dc" if location == "DC1" else "store",
                                 "tags": ["ship"] if location != "S05" else []}
                      for location in POOL_LOCATIONS},
        "channels": {
            "web": {"location_tags": ["ship"], "include_in_transit": True, "buffer": 1},
            "dc": {"location_types": ["dc"]},
            "pickup": {"location_types": ["store"], "per_location": True},
        },
    },
    "pools",
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["RECEIPT", "SALE", "COUNT", "TRANSFER_SHIPPED"]),
                          st.sampled_from(POOL_LOCATIONS), st.integers(1, 40),
                          st.integers(-50, 50)),
                min_size=1, max_size=60))
def test_running_channel_pools_always_equal_a_pool_from_scratch(
        operations: list[tuple[str, str, int, int]]) -> None:
    """New members arrive, members move up and down, as_of jumps around (late events):
    after every publish each pooled channel's running state equals a fresh one."""
    harness = Harness(POOL_RULES)
    for n, (kind, location, quantity, at) in enumerate(operations):
        fields: dict[str, Any] = {}
        if kind == "TRANSFER_SHIPPED":
            fields = {"transfer_id": f"t{n}",
                      "counterparty_location_id": "S00" if location == "DC1" else "DC1"}
        harness.apply(ev(f"e{n}", kind, quantity, location, at=1000 + at, **fields))
        publisher = harness.publisher
        for name, running in publisher._pools.items():
            fresh = snapshots.ChannelPool(POOL_RULES.channels[name],
                                          publisher._members_of(name, POOL_RULES),
                                          publisher.positions, publisher._contribution)
            assert (running.total, running.as_of, running.contributions) == (
                fresh.total, fresh.as_of, fresh.contributions)
        for name, members in publisher._members.items():
            assert members == sorted(location for location in publisher.positions
                                     if name in POOL_RULES.channel_names_for(location))
    if any(location not in ("S05", "DC1") for _, location, _, _ in operations):
        assert "web" in harness.publisher._pools  # the check above did run


def test_a_running_pool_asks_to_be_rebuilt_when_its_latest_as_of_goes_back() -> None:
    """Published positions' as_of only rise today; the pool stays exact if one does not."""
    rule = POOL_RULES.channels["web"]
    q = PositionQuantities
    published = {"S00": (q(5, 0, 0, 1, 0, 5, 200), 1), "S01": (q(2, 0, 0, 0, 0, 2, 100), 1)}

    def contribution(location_id: str) -> LocationContribution:
        quantities = published[location_id][0]
        return LocationContribution(location_id, quantities.ats, quantities.in_transit)

    running = snapshots.ChannelPool(rule, ["S00", "S01"], published, contribution)
    assert (running.total, running.as_of) == (8, 200)
    assert running.update(published["S01"][0], q(3, 0, 0, 0, 0, 3, 150),
                          LocationContribution("S01", 3, 0))
    assert (running.total, running.as_of) == (9, 200)
    assert running.contributions == [LocationContribution("S00", 5, 1),
                                     LocationContribution("S01", 3, 0)]
    assert not running.update(published["S00"][0], q(5, 0, 0, 1, 0, 5, 120),
                              LocationContribution("S00", 5, 1))
