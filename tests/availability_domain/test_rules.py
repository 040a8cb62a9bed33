"""Rules file parsing, validation messages and lookups."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from availability_domain.rules import (
    ChannelRule,
    Location,
    Rules,
    RulesError,
    load_rules,
    parse_rules,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rules.toml"


def _minimal(**channel: Any) -> dict[str, Any]:
    return {
        "locations": {"DC1": {"type": "dc"}},
        "channels": {"web": {"location_types": ["dc"], **channel}},
    }


def _error(data: dict[str, Any], source: str = "rules.toml") -> str:
    with pytest.raises(RulesError) as caught:
        parse_rules(data, source)
    return str(caught.value)


def test_example_file_loads_as_a_realistic_retailer() -> None:
    rules = load_rules(EXAMPLE)
    types = [location.type for location in rules.locations.values()]
    assert types.count("dc") == 3
    assert types.count("store") == 20
    assert set(rules.channels) == {"web", "amazon", "walmart", "pickup"}
    assert rules.channels["pickup"].per_location
    assert rules.channels["amazon"].allocation < 1
    assert rules.channels["walmart"].max_quantity is not None
    assert [rule.name for rule in rules.channels_for("DC-EAST")] == ["web", "amazon", "walmart"]
    assert [rule.name for rule in rules.channels_for("DC-WEST")] == ["web", "amazon"]
    assert [rule.name for rule in rules.channels_for("S001")] == ["web", "pickup"]
    assert [rule.name for rule in rules.channels_for("S003")] == ["pickup"]
    assert rules.safety_stock("SKU-CONSOLE-X", "DC-EAST") == 20
    assert rules.safety_stock("SKU-CONSOLE-X", "S003") == 5
    assert rules.safety_stock("SKU-TV-65", "S020") == 0
    assert rules.safety_stock("SKU-OTHER", "S003") == 1


def test_full_channel_is_parsed() -> None:
    rules = parse_rules(
        {
            "locations": {
                "DC1": {"type": "dc", "tags": ["ship"], "safety_stock": 0},
                "S001": {"type": "store", "tags": ["ship-from-store", "pickup"], "safety_stock": 1},
            },
            "safety_stock": [{"sku": "SKU-1", "location": "S001", "quantity": 3}],
            "channels": {
                "web": {
                    "locations": ["DC1"],
                    "location_types": ["dc"],
                    "location_tags": ["ship-from-store"],
                    "buffer": 2,
                    "allocation": 1.0,
                    "max_quantity": 500,
                    "include_in_transit": False,
                },
                "pickup": {"location_tags": ["pickup"], "per_location": True},
            },
        },
        "doc.toml",
    )
    assert rules.channels["web"] == ChannelRule(
        name="web",
        locations=frozenset({"DC1"}),
        location_types=frozenset({"dc"}),
        location_tags=frozenset({"ship-from-store"}),
        buffer=2,
        allocation=Fraction(1),
        max_quantity=500,
    )
    assert rules.locations["S001"] == Location("S001", "store", frozenset({"ship-from-store",
                                                                          "pickup"}), 1)


@pytest.mark.parametrize(
    ("written", "exact"),
    [(0.29, Fraction(29, 100)), (0.1, Fraction(1, 10)), (1, Fraction(1)), (0, Fraction(0))],
)
def test_allocation_is_the_decimal_the_file_shows(written: float, exact: Fraction) -> None:
    rules = parse_rules(_minimal(allocation=written), "r.toml")
    assert rules.channels["web"].allocation == exact


def test_allocation_from_toml_text_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[channels.web]\nlocations = ["DC1"]\nallocation = 0.29\n')
    assert load_rules(path).channels["web"].allocation == Fraction(29, 100)


def test_safety_stock_precedence() -> None:
    rules = parse_rules(
        {
            "locations": {
                "S1": {"type": "store", "safety_stock": 1},
                "S2": {"type": "store", "safety_stock": 2},
            },
            "safety_stock": [
                {"sku": "A", "quantity": 5},
                {"sku": "A", "location": "S1", "quantity": 7},
                {"sku": "B", "location": "S9", "quantity": 4},
            ],
        },
        "r.toml",
    )
    assert rules.safety_stock("A", "S1") == 7
    assert rules.safety_stock("A", "S2") == 5
    assert rules.safety_stock("A", "S9") == 5
    assert rules.safety_stock("B", "S2") == 2
    assert rules.safety_stock("B", "S9") == 4
    assert rules.safety_stock("C", "S9") == 0


def test_unknown_location_defaults_and_is_eligible_only_when_named() -> None:
    rules = parse_rules(
        {
            "locations": {"DC1": {"type": "dc", "tags": ["ship"]}},
            "channels": {
                "web": {"location_types": ["dc"], "location_tags": ["ship"]},
                "named": {"locations": ["X9"]},
            },
        },
        "r.toml",
    )
    unknown = rules.location("X9")
    assert unknown == Location("X9", "unknown", frozenset(), 0)
    assert rules.location("X9") is unknown
    assert [rule.name for rule in rules.channels_for("X9")] == ["named"]
    assert rules.channels_for("X8") == ()
    assert rules.is_eligible("web", "DC1")
    assert not rules.is_eligible("named", "DC1")


def test_empty_rules() -> None:
    rules = Rules.empty()
    assert rules.channels == {}
    assert rules.safety_stock("A", "S1") == 0
    assert parse_rules({}, "empty.toml") == rules


def test_rules_pickle() -> None:
    rules = load_rules(EXAMPLE)
    rules.channels_for("S001")
    again = pickle.loads(pickle.dumps(rules))
    assert again == rules
    assert [rule.name for rule in again.channels_for("S001")] == ["web", "pickup"]


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"location": {}}, "location", "unknown key"),
        ({"locations": {"DC1": {"type": "dc", "kind": "x"}}}, "locations.DC1.kind", "unknown key"),
        ({"locations": {"DC1": {}}}, "locations.DC1.type", "is required"),
        ({"locations": {"DC1": {"type": 3}}}, "locations.DC1.type", "must be a string"),
        ({"locations": {"DC1": {"type": "dc", "tags": "ship"}}}, "locations.DC1.tags",
         "must be an array"),
        ({"locations": {"DC1": {"type": "dc", "tags": ["ship", 1]}}}, "locations.DC1.tags[1]",
         "must be a string"),
        ({"locations": {"DC1": {"type": "dc", "safety_stock": True}}},
         "locations.DC1.safety_stock", "must be an integer, got boolean"),
        ({"locations": {"DC1": {"type": "dc", "safety_stock": 1.5}}},
         "locations.DC1.safety_stock", "must be an integer"),
        ({"locations": {"DC1": {"type": "dc", "safety_stock": -1}}},
         "locations.DC1.safety_stock", "must be >= 0"),
        ({"locations": {"DC|1": {"type": "dc"}}}, "locations.DC|1", "must not contain '|'"),
        ({"locations": ["DC1"]}, "locations", "must be a table"),
        ({"safety_stock": {"sku": "A"}}, "safety_stock", "array of tables"),
        ({"safety_stock": [{"quantity": 1}]}, "safety_stock[0].sku", "is required"),
        ({"safety_stock": [{"sku": "A"}]}, "safety_stock[0].quantity", "is required"),
        ({"safety_stock": [{"sku": "A", "quantity": 1, "loc": "S1"}]}, "safety_stock[0].loc",
         "unknown key"),
        ({"safety_stock": [{"sku": "A", "quantity": -2}]}, "safety_stock[0].quantity",
         "must be >= 0"),
        ({"safety_stock": [{"sku": "A|B", "quantity": 1}]}, "safety_stock[0].sku",
         "must not contain"),
        ({"safety_stock": [{"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 2}]},
         "safety_stock[1]", "duplicate override"),
        (_minimal(allocation=1.5), "channels.web.allocation", "must be between 0 and 1, got 1.5"),
        (_minimal(allocation=-0.1), "channels.web.allocation", "must be between 0 and 1"),
        (_minimal(allocation=float("nan")), "channels.web.allocation", "must be between 0 and 1"),
        (_minimal(allocation="half"), "channels.web.allocation", "must be a number"),
        (_minimal(allocation=True), "channels.web.allocation", "must be a number"),
        (_minimal(buffer=-1), "channels.web.buffer", "must be >= 0"),
        (_minimal(buffer=False), "channels.web.buffer", "must be an integer, got boolean"),
        (_minimal(max_quantity=-5), "channels.web.max_quantity", "must be >= 0"),
        (_minimal(max_quantity="10"), "channels.web.max_quantity", "must be an integer"),
        (_minimal(include_in_transit=1), "channels.web.include_in_transit", "must be a boolean"),
        (_minimal(per_location="yes"), "channels.web.per_location", "must be a boolean"),
        (_minimal(location_tags="pickup"), "channels.web.location_tags", "must be an array"),
        (_minimal(locations=["DC|2"]), "channels.web.locations[0]", "must not contain"),
        (_minimal(location_types=["unknown"]), "channels.web.location_types", "reserved"),
        (_minimal(allocations=0.5), "channels.web.allocations", "unknown key"),
        ({"channels": {"web": {}}}, "channels.web", "selects no location"),
        ({"channels": {"web": {"locations": [], "location_tags": []}}}, "channels.web",
         "selects no location"),
        ({"channels": {"we|b": {"locations": ["DC1"]}}}, "channels.we|b", "must not contain"),
        ({"channels": {"web": "DC1"}}, "channels.web", "must be a table"),
    ],
)
def test_bad_rules_are_refused_with_file_key_and_reason(
    data: dict[str, Any], key: str, reason: str
) -> None:
    message = _error(data, "conf/rules.toml")
    assert message.startswith(f"conf/rules.toml: {key}: "), message
    assert reason in message


def test_allocation_message_matches_the_documented_form() -> None:
    message = _error(_minimal(allocation=1.5), "examples/rules.toml")
    assert message == (
        "examples/rules.toml: channels.web.allocation: must be between 0 and 1, got 1.5"
    )


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[channels.web\nlocations = 1\n")
    with pytest.raises(RulesError, match=r"broken\.toml: invalid TOML"):
        load_rules(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"nope\.toml: cannot read"):
        load_rules(tmp_path / "nope.toml")


def test_load_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[channels.web]\nlocations = ["DC1"]\nbuffer = true\n')
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert str(caught.value) == (
        f"{path}: channels.web.buffer: must be an integer, got boolean True"
    )
