"""Canonical inventory events and the rules that make one valid (DESIGN 3).

Validation lives here, not in the codec, because "a SALE needs q > 0" is a business
rule; the codec only turns bytes into a mapping and calls :func:`parse_event`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NamedTuple

KEY_DELIMITER = "|"


class EventType(StrEnum):
    RECEIPT = "RECEIPT"
    ADJUSTMENT = "ADJUSTMENT"
    COUNT = "COUNT"
    SALE = "SALE"
    RETURN = "RETURN"
    TRANSFER_SHIPPED = "TRANSFER_SHIPPED"
    TRANSFER_RECEIVED = "TRANSFER_RECEIVED"
    RESERVATION_CREATED = "RESERVATION_CREATED"
    RESERVATION_RELEASED = "RESERVATION_RELEASED"
    RESERVATION_FULFILLED = "RESERVATION_FULFILLED"


class InvalidEvent(ValueError):
    """An event that must go to the dead-letter topic; ``str()`` is the reason."""


class InventoryEvent(NamedTuple):
    """One canonical event. A NamedTuple: built, pickled and exchanged between
    workers millions of times, it costs a fraction of a frozen dataclass."""

    event_id: str
    event_type: EventType
    occurred_at: int
    """Event time at the source, UTC epoch milliseconds."""
    source: str
    sku: str
    location_id: str
    quantity: int
    reason: str | None = None
    transfer_id: str | None = None
    counterparty_location_id: str | None = None
    reservation_id: str | None = None
    channel: str | None = None
    expires_at: int | None = None
    restockable: bool = True

    @property
    def position_key(self) -> str:
        return f"{self.sku}{KEY_DELIMITER}{self.location_id}"

    def to_record(self) -> dict[str, Any]:
        """The Avro/JSON field mapping of this event (``event_type`` as its name)."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type.value,
            "occurred_at": self.occurred_at,
            "source": self.source,
            "sku": self.sku,
            "location_id": self.location_id,
            "quantity": self.quantity,
            "reason": self.reason,
            "transfer_id": self.transfer_id,
            "counterparty_location_id": self.counterparty_location_id,
            "reservation_id": self.reservation_id,
            "channel": self.channel,
            "expires_at": self.expires_at,
            "restockable": self.restockable,
        }


_POSITIVE, _NON_NEGATIVE, _NON_ZERO = "> 0", ">= 0", "!= 0"
_QUANTITY_RULE: dict[EventType, str] = {
    EventType.RECEIPT: _POSITIVE,
    EventType.ADJUSTMENT: _NON_ZERO,
    EventType.COUNT: _NON_NEGATIVE,
    EventType.SALE: _POSITIVE,
    EventType.RETURN: _POSITIVE,
    EventType.TRANSFER_SHIPPED: _POSITIVE,
    EventType.TRANSFER_RECEIVED: _NON_NEGATIVE,
    EventType.RESERVATION_CREATED: _POSITIVE,
    EventType.RESERVATION_RELEASED: _NON_NEGATIVE,
    EventType.RESERVATION_FULFILLED: _POSITIVE,
}

_REQUIRED_BY_TYPE: dict[EventType, tuple[str, ...]] = {
    EventType.ADJUSTMENT: ("reason",),
    EventType.TRANSFER_SHIPPED: ("transfer_id", "counterparty_location_id"),
    EventType.TRANSFER_RECEIVED: ("transfer_id", "counterparty_location_id"),
    EventType.RESERVATION_CREATED: ("reservation_id", "channel"),
    EventType.RESERVATION_RELEASED: ("reservation_id",),
    EventType.RESERVATION_FULFILLED: ("reservation_id",),
}

_TYPES = {member.value: member for member in EventType}
_REQUIRED_STRINGS = ("event_id", "source", "sku", "location_id")
_OPTIONAL_STRINGS = ("reason", "transfer_id", "counterparty_location_id", "reservation_id",
                     "channel")
_ID_FIELDS = frozenset({"event_id", "sku", "location_id", "transfer_id",
                        "counterparty_location_id", "reservation_id", "channel"})


def _check_string(name: str, value: Any, required: bool) -> None:
    if value is None:
        if required:
            raise InvalidEvent(f"missing required field {name!r}")
        return
    if type(value) is not str or not value or value.isspace():
        suffix = "" if required else " when present"
        raise InvalidEvent(f"field {name!r} must be a non-empty string{suffix}")
    if KEY_DELIMITER in value and name in _ID_FIELDS:
        raise InvalidEvent(
            f"field {name!r} contains the key delimiter {KEY_DELIMITER!r}: {value!r}"
        )


def parse_event(record: Mapping[str, Any]) -> InventoryEvent:
    """Build an :class:`InventoryEvent` from a field mapping, or raise :class:`InvalidEvent`.

    Times must already be epoch milliseconds (the codec and the JSON reader convert).
    """
    get = record.get
    raw_type = get("event_type")
    event_type = _TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if event_type is None:
        raise InvalidEvent(f"unknown event_type {raw_type!r}")

    for name in _REQUIRED_STRINGS:
        _check_string(name, get(name), True)
    optional = [get(name) for name in _OPTIONAL_STRINGS]
    for name, value in zip(_OPTIONAL_STRINGS, optional, strict=True):
        if value is not None:
            _check_string(name, value, False)
    reason, transfer_id, counterparty, reservation_id, channel = optional
    for name in _REQUIRED_BY_TYPE.get(event_type, ()):
        if get(name) is None:
            raise InvalidEvent(f"{event_type} requires field {name!r}")

    occurred_at = get("occurred_at")
    if occurred_at is None:
        raise InvalidEvent("missing required field 'occurred_at'")
    if type(occurred_at) is not int or occurred_at < 0:
        raise InvalidEvent(f"occurred_at must be epoch milliseconds >= 0, got {occurred_at!r}")
    expires_at = get("expires_at")
    if expires_at is not None and (type(expires_at) is not int or expires_at < 0):
        raise InvalidEvent(f"expires_at must be epoch milliseconds >= 0, got {expires_at!r}")

    quantity = get("quantity")
    if quantity is None:
        raise InvalidEvent("missing required field 'quantity'")
    if type(quantity) is not int:
        raise InvalidEvent(f"quantity must be an integer, got {quantity!r}")
    rule = _QUANTITY_RULE[event_type]
    if (quantity <= 0 if rule is _POSITIVE else quantity < 0 if rule is _NON_NEGATIVE
            else quantity == 0):
        raise InvalidEvent(f"{event_type} quantity must be {rule}, got {quantity}")

    restockable = get("restockable")
    if restockable is None:
        restockable = True
    elif type(restockable) is not bool:
        raise InvalidEvent(f"restockable must be a boolean, got {restockable!r}")

    location_id = record["location_id"]
    if event_type is EventType.TRANSFER_SHIPPED and counterparty == location_id:
        raise InvalidEvent("TRANSFER_SHIPPED destination equals its origin location")

    return InventoryEvent(
        record["event_id"], event_type, occurred_at, record["source"], record["sku"],
        location_id, quantity, reason, transfer_id, counterparty, reservation_id, channel,
        expires_at, restockable,
    )
