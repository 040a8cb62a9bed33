"""Channel formulas."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from availability_domain.channels import (
    ChannelAvailability,
    LocationContribution,
    channel_ats,
    channel_availability,
)
from availability_domain.inventory import PositionQuantities
from availability_domain.rules import ChannelRule, Rules, parse_rules


def quantities(ats: int, in_transit: int = 0, as_of: int = 1) -> PositionQuantities:
    return PositionQuantities(
        on_hand=ats, unsellable=0, reserved=0, in_transit=in_transit, safety_stock=0, ats=ats,
        as_of=as_of,
    )


def rules_with(**channel: Any) -> Rules:
    return parse_rules(
        {
            "locations": {
                "DC1": {"type": "dc"},
                "DC2": {"type": "dc"},
                "S1": {"type": "store", "tags": ["pickup"]},
                "S2": {"type": "store", "tags": ["pickup", "ship-from-store"]},
            },
            "channels": {"web": channel},
        },
        "test",
    )


@pytest.mark.parametrize(
    ("pooled", "settings", "expected"),
    [
        (10, {}, 10),
        (10, {"buffer": 3}, 7),
        (2, {"buffer": 3}, 0),
        (100, {"allocation": Fraction(29, 100)}, 29),
        (7, {"allocation": Fraction(1, 2)}, 3),
        (100, {"allocation": Fraction(1, 2), "buffer": 5, "max_quantity": 40}, 40),
        (100, {"allocation": Fraction(1, 2), "buffer": 5, "max_quantity": 50}, 45),
        (100, {"max_quantity": 0}, 0),
        (0, {}, 0),
    ],
)
def test_channel_formula(pooled: int, settings: dict[str, Any], expected: int) -> None:
    assert channel_ats(ChannelRule("c", locations=frozenset({"X"}), **settings), pooled) == expected


def test_allocation_from_file_floors_exactly() -> None:
    rules = rules_with(location_types=["dc"], allocation=0.29)
    result = channel_availability(rules.channels["web"], "A", {"DC1": quantities(100)}, rules)
    assert result[0].ats == 29


def test_pooled_sums_eligible_positions_and_explains_itself() -> None:
    rules = rules_with(location_types=["dc"], location_tags=["ship-from-store"], buffer=1)
    positions = {
        "S2": quantities(4, as_of=30),
        "DC1": quantities(10, in_transit=5, as_of=10),
        "S1": quantities(100, as_of=99),
        "X9": quantities(100, as_of=99),
    }
    assert channel_availability(rules.channels["web"], "A", positions, rules) == [
        ChannelAvailability(
            channel="web",
            sku="A",
            location_id=None,
            ats=13,
            as_of=30,
            locations=(
                LocationContribution("DC1", 10, 5),
                LocationContribution("S2", 4, 0),
            ),
        )
    ]


def test_in_transit_counts_only_when_asked() -> None:
    rules = rules_with(location_types=["dc"], include_in_transit=True)
    positions = {"DC1": quantities(10, in_transit=5), "DC2": quantities(0, in_transit=2)}
    assert channel_availability(rules.channels["web"], "A", positions, rules)[0].ats == 17


def test_per_location_channel_gives_one_number_per_eligible_position() -> None:
    rules = rules_with(location_tags=["pickup"], per_location=True, buffer=1)
    positions = {
        "S2": quantities(5, as_of=7),
        "S1": quantities(0, as_of=3),
        "DC1": quantities(50),
    }
    results = channel_availability(rules.channels["web"], "A", positions, rules)
    assert [(r.location_id, r.ats, r.as_of) for r in results] == [("S1", 0, 3), ("S2", 4, 7)]
    assert results[1].locations == (LocationContribution("S2", 5, 0),)


def test_no_eligible_position_means_no_number() -> None:
    rules = rules_with(location_types=["dc"])
    assert channel_availability(rules.channels["web"], "A", {"S1": quantities(5)}, rules) == []


def test_unknown_location_counts_only_where_named() -> None:
    named = rules_with(locations=["X9"], location_types=["dc"])
    positions = {"X9": quantities(6), "X8": quantities(100)}
    result = channel_availability(named.channels["web"], "A", positions, named)
    assert [(r.ats, r.locations) for r in result] == [(6, (LocationContribution("X9", 6, 0),))]
