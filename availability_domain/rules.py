"""Location rules: locations, per-SKU safety stock and channels.

The rules file is the only configuration a merchandiser edits, so a mistake in it must
stop the engine with the file, the key path and what is wrong, never be guessed around:
unknown keys, wrong types (a TOML boolean is not an integer), out-of-range numbers and ids
containing the key delimiter are all refused by :func:`parse_rules`.

``allocation`` is read as the decimal the file shows, not as the binary float TOML hands
us: ``allocation = 0.29`` becomes ``Fraction(29, 100)`` (via ``repr`` of the float, the
shortest text that round-trips), so ``floor(0.29 * 100)`` is 29, as a person would
compute it, and not 28.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from availability_contracts.errors import AvailabilityError
from availability_contracts.keys import KEY_DELIMITER

UNKNOWN_LOCATION_TYPE = "unknown"


class RulesError(AvailabilityError, ValueError):
    """A rules file that cannot be used; the message names the file, key path and reason."""

    code = "invalid_rules"


@dataclass(frozen=True, slots=True)
class Location:
    id: str
    type: str
    tags: frozenset[str] = frozenset()
    safety_stock: int = 0


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """How one sales channel turns eligible positions into a number."""

    name: str
    locations: frozenset[str] = frozenset()
    location_types: frozenset[str] = frozenset()
    location_tags: frozenset[str] = frozenset()
    buffer: int = 0
    allocation: Fraction = Fraction(1)
    max_quantity: int | None = None
    include_in_transit: bool = False
    per_location: bool = False

    def is_eligible(self, location: Location) -> bool:
        """Eligibility is the union of the three selectors."""
        return (
            location.id in self.locations
            or location.type in self.location_types
            or not self.location_tags.isdisjoint(location.tags)
        )


@dataclass(frozen=True, slots=True)
class Rules:
    """Parsed rules with per-location lookups cached, because they run per event."""

    locations: dict[str, Location] = field(default_factory=dict)
    safety_stock_overrides: dict[tuple[str, str | None], int] = field(default_factory=dict)
    """(sku, location_id) or (sku, None) for "every location" -> units."""
    channels: dict[str, ChannelRule] = field(default_factory=dict)
    _unknown: dict[str, Location] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _channels_for: dict[str, tuple[ChannelRule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _channel_names_for: dict[str, frozenset[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _override_skus: frozenset[str] = field(
        default=frozenset(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        skus = frozenset(sku for sku, _ in self.safety_stock_overrides)
        object.__setattr__(self, "_override_skus", skus)

    @classmethod
    def empty(cls) -> Rules:
        return cls()

    def fingerprint(self) -> str:
        """A digest that changes exactly when the rules' meaning does.

        Built from sorted values, not ``repr``: set order varies between processes, and a
        reordered or re-commented file must not look like a rules change.
        """
        canonical = {
            "locations": sorted(
                (loc.id, loc.type, sorted(loc.tags), loc.safety_stock)
                for loc in self.locations.values()
            ),
            "safety_stock": sorted(
                (sku, location or "", units)
                for (sku, location), units in self.safety_stock_overrides.items()
            ),
            "channels": sorted(
                (rule.name, sorted(rule.locations), sorted(rule.location_types),
                 sorted(rule.location_tags), rule.buffer,
                 f"{rule.allocation.numerator}/{rule.allocation.denominator}",
                 rule.max_quantity, rule.include_in_transit, rule.per_location)
                for rule in self.channels.values()
            ),
        }
        text = json.dumps(canonical, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def location(self, location_id: str) -> Location:
        """The declared location, or an ``unknown`` one (no tags, safety stock 0)."""
        found = self.locations.get(location_id)
        if found is not None:
            return found
        unknown = self._unknown.get(location_id)
        if unknown is None:
            unknown = Location(location_id, UNKNOWN_LOCATION_TYPE, frozenset(), 0)
            self._unknown[location_id] = unknown
        return unknown

    def safety_stock(self, sku: str, location_id: str) -> int:
        """sku+location override, else sku override, else location default, else 0."""
        if sku in self._override_skus:
            overrides = self.safety_stock_overrides
            value = overrides.get((sku, location_id))
            if value is not None:
                return value
            value = overrides.get((sku, None))
            if value is not None:
                return value
        found = self.locations.get(location_id)
        return found.safety_stock if found is not None else 0

    def channels_for(self, location_id: str) -> tuple[ChannelRule, ...]:
        """Channels the location is eligible for, in file order."""
        cached = self._channels_for.get(location_id)
        if cached is None:
            location = self.location(location_id)
            cached = tuple(rule for rule in self.channels.values() if rule.is_eligible(location))
            self._channels_for[location_id] = cached
        return cached

    def channel_names_for(self, location_id: str) -> frozenset[str]:
        """Names of the channels the location is eligible for (cheap membership tests)."""
        cached = self._channel_names_for.get(location_id)
        if cached is None:
            cached = frozenset(rule.name for rule in self.channels_for(location_id))
            self._channel_names_for[location_id] = cached
        return cached

    def is_eligible(self, channel: str, location_id: str) -> bool:
        return channel in self.channel_names_for(location_id)


def load_rules(path: str | Path) -> Rules:
    """Read and validate a rules TOML file."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise RulesError(f"{source}: cannot read rules file: {exc.strerror or exc}") from None
    return parse_rules(data, source)


def parse_rules(data: Mapping[str, Any], source: str) -> Rules:
    """Validate an already-decoded rules mapping; ``source`` names it in errors."""
    parser = _Parser(source)
    parser.keys(data, "", {"locations", "safety_stock", "channels"})
    locations = parser.locations(data.get("locations", {}))
    overrides = parser.overrides(data.get("safety_stock", []))
    channels = parser.channels(data.get("channels", {}))
    return Rules(locations=locations, safety_stock_overrides=overrides, channels=channels)


_LOCATION_KEYS = {"type", "tags", "safety_stock"}
_OVERRIDE_KEYS = {"sku", "location", "quantity"}
_CHANNEL_KEYS = {
    "locations",
    "location_types",
    "location_tags",
    "buffer",
    "allocation",
    "max_quantity",
    "include_in_transit",
    "per_location",
}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


class _Parser:
    """Validation helpers that all know which file they report about."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> RulesError:
        return RulesError(f"{self.source}: {path or '<top level>'}: {problem}")

    def table(self, table: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(table, Mapping):
            raise self.fail(path, f"must be a table, got {_type_name(table)}")
        return table

    def keys(self, table: Any, path: str, allowed: set[str]) -> None:
        for key in self.table(table, path):
            if key not in allowed:
                expected = ", ".join(sorted(allowed))
                raise self.fail(_join(path, key), f"unknown key (expected one of: {expected})")

    def identifier(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, got {_type_name(value)} {value!r}")
        if not value.strip():
            raise self.fail(path, "must not be empty")
        if KEY_DELIMITER in value:
            raise self.fail(path, f"must not contain {KEY_DELIMITER!r}, got {value!r}")
        return value

    def text(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, got {_type_name(value)} {value!r}")
        if not value.strip():
            raise self.fail(path, "must not be empty")
        return value

    def count(self, value: Any, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(path, f"must be an integer, got {_type_name(value)} {value!r}")
        if value < 0:
            raise self.fail(path, f"must be >= 0, got {value}")
        return value

    def flag(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be a boolean, got {_type_name(value)} {value!r}")
        return value

    def strings(self, value: Any, path: str, *, identifiers: bool = False) -> frozenset[str]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be an array of strings, got {_type_name(value)}")
        check = self.identifier if identifiers else self.text
        return frozenset(check(item, f"{path}[{index}]") for index, item in enumerate(value))

    def fraction(self, value: Any, path: str) -> Fraction:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"must be a number, got {_type_name(value)} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(path, f"must be between 0 and 1, got {value}")
        exact = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
        if not 0 <= exact <= 1:
            raise self.fail(path, f"must be between 0 and 1, got {value}")
        return exact

    def locations(self, table: Any) -> dict[str, Location]:
        result: dict[str, Location] = {}
        for location_id, spec in self.table(table, "locations").items():
            path = _join("locations", location_id)
            self.identifier(location_id, path)
            self.keys(spec, path, _LOCATION_KEYS)
            if "type" not in spec:
                raise self.fail(_join(path, "type"), "is required")
            result[location_id] = Location(
                id=location_id,
                type=self.text(spec["type"], _join(path, "type")),
                tags=self.strings(spec.get("tags", []), _join(path, "tags")),
                safety_stock=self.count(spec.get("safety_stock", 0), _join(path, "safety_stock")),
            )
        return result

    def overrides(self, entries: Any) -> dict[tuple[str, str | None], int]:
        if not isinstance(entries, list):
            raise self.fail(
                "safety_stock", f"must be an array of tables ([[safety_stock]]), "
                f"got {_type_name(entries)}"
            )
        result: dict[tuple[str, str | None], int] = {}
        for index, entry in enumerate(entries):
            path = f"safety_stock[{index}]"
            self.keys(entry, path, _OVERRIDE_KEYS)
            for required in ("sku", "quantity"):
                if required not in entry:
                    raise self.fail(_join(path, required), "is required")
            sku = self.identifier(entry["sku"], _join(path, "sku"))
            location = entry.get("location")
            if location is not None:
                location = self.identifier(location, _join(path, "location"))
            key = (sku, location)
            if key in result:
                where = f"location {location!r}" if location else "every location"
                raise self.fail(path, f"duplicate override for sku {sku!r} at {where}")
            result[key] = self.count(entry["quantity"], _join(path, "quantity"))
        return result

    def channels(self, table: Any) -> dict[str, ChannelRule]:
        result: dict[str, ChannelRule] = {}
        for name, spec in self.table(table, "channels").items():
            path = _join("channels", name)
            self.identifier(name, path)
            self.keys(spec, path, _CHANNEL_KEYS)
            location_types = self.strings(
                spec.get("location_types", []), _join(path, "location_types")
            )
            if UNKNOWN_LOCATION_TYPE in location_types:
                raise self.fail(
                    _join(path, "location_types"),
                    f"{UNKNOWN_LOCATION_TYPE!r} is reserved for locations missing from the "
                    "file, which are eligible only where a channel names them in 'locations'",
                )
            max_quantity = spec.get("max_quantity")
            rule = ChannelRule(
                name=name,
                locations=self.strings(
                    spec.get("locations", []), _join(path, "locations"), identifiers=True
                ),
                location_types=location_types,
                location_tags=self.strings(
                    spec.get("location_tags", []), _join(path, "location_tags")
                ),
                buffer=self.count(spec.get("buffer", 0), _join(path, "buffer")),
                allocation=self.fraction(spec.get("allocation", 1), _join(path, "allocation")),
                max_quantity=(
                    None
                    if max_quantity is None
                    else self.count(max_quantity, _join(path, "max_quantity"))
                ),
                include_in_transit=self.flag(
                    spec.get("include_in_transit", False), _join(path, "include_in_transit")
                ),
                per_location=self.flag(
                    spec.get("per_location", False), _join(path, "per_location")
                ),
            )
            if not (rule.locations or rule.location_types or rule.location_tags):
                raise self.fail(
                    path,
                    "selects no location (set locations, location_types or location_tags)",
                )
            result[name] = rule
        return result
