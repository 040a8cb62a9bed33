"""Canonical inventory events and the rules that make one valid (DESIGN 3).

Validation lives here, not in the codec, because "a SALE needs q > 0" is a business
rule; the codec only turns bytes into a mapping and calls :func:`parse_event`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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


@dataclass(frozen=True, slots=True)
class InventoryEvent:
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


# quantity rule per type: (predicate, human wording)
_QUANTITY_RULES: dict[EventType, tuple[str, Any]] = {
    EventType.RECEIPT: ("> 0", lambda q: q > 0),
    EventType.ADJUSTMENT: ("!= 0", lambda q: q != 0),
    EventType.COUNT: (">= 0", lambda q: q >= 0),
    EventType.SALE: ("> 0", lambda q: q > 0),
    EventType.RETURN: ("> 0", lambda q: q > 0),
    EventType.TRANSFER_SHIPPED: ("> 0", lambda q: q > 0),
    EventType.TRANSFER_RECEIVED: (">= 0", lambda q: q >= 0),
    EventType.RESERVATION_CREATED: ("> 0", lambda q: q > 0),
    EventType.RESERVATION_RELEASED: (">= 0", lambda q: q >= 0),
    EventType.RESERVATION_FULFILLED: ("> 0", lambda q: q > 0),
}

_REQUIRED_BY_TYPE: dict[EventType, tuple[str, ...]] = {
    EventType.ADJUSTMENT: ("reason",),
    EventType.TRANSFER_SHIPPED: ("transfer_id", "counterparty_location_id"),
    EventType.TRANSFER_RECEIVED: ("transfer_id", "counterparty_location_id"),
    EventType.RESERVATION_CREATED: ("reservation_id", "channel"),
    EventType.RESERVATION_RELEASED: ("reservation_id",),
    EventType.RESERVATION_FULFILLED: ("reservation_id",),
}

_ID_FIELDS = (
    "event_id",
    "sku",
    "location_id",
    "transfer_id",
    "counterparty_location_id",
    "reservation_id",
    "channel",
)
_REQUIRED_STRINGS = ("event_id", "source", "sku", "location_id")
_OPTIONAL_STRINGS = ("reason", "transfer_id", "counterparty_location_id", "reservation_id",
                     "channel")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_event(record: Mapping[str, Any]) -> InventoryEvent:
    """Build an :class:`InventoryEvent` from a field mapping, or raise :class:`InvalidEvent`.

    Times must already be epoch milliseconds (the codec and the JSON reader convert).
    """
    raw_type = record.get("event_type")
    try:
        event_type = EventType(raw_type)
    except ValueError:
        raise InvalidEvent(f"unknown event_type {raw_type!r}") from None

    for name in _REQUIRED_STRINGS:
        value = record.get(name)
        if value is None:
            raise InvalidEvent(f"missing required field {name!r}")
        if not isinstance(value, str) or not value.strip():
            raise InvalidEvent(f"field {name!r} must be a non-empty string")
    for name in _OPTIONAL_STRINGS:
        value = record.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InvalidEvent(f"field {name!r} must be a non-empty string when present")
    for name in _REQUIRED_BY_TYPE.get(event_type, ()):
        if record.get(name) is None:
            raise InvalidEvent(f"{event_type} requires field {name!r}")
    for name in _ID_FIELDS:
        value = record.get(name)
        if value is not None and KEY_DELIMITER in value:
            raise InvalidEvent(
                f"field {name!r} contains the key delimiter {KEY_DELIMITER!r}: {value!r}"
            )

    occurred_at = record.get("occurred_at")
    if occurred_at is None:
        raise InvalidEvent("missing required field 'occurred_at'")
    if not _is_int(occurred_at) or occurred_at < 0:
        raise InvalidEvent(f"occurred_at must be epoch milliseconds >= 0, got {occurred_at!r}")
    expires_at = record.get("expires_at")
    if expires_at is not None and (not _is_int(expires_at) or expires_at < 0):
        raise InvalidEvent(f"expires_at must be epoch milliseconds >= 0, got {expires_at!r}")

    quantity = record.get("quantity")
    if quantity is None:
        raise InvalidEvent("missing required field 'quantity'")
    if not _is_int(quantity):
        raise InvalidEvent(f"quantity must be an integer, got {quantity!r}")
    wording, allowed = _QUANTITY_RULES[event_type]
    if not allowed(quantity):
        raise InvalidEvent(f"{event_type} quantity must be {wording}, got {quantity}")

    restockable = record.get("restockable")
    if restockable is None:
        restockable = True
    elif not isinstance(restockable, bool):
        raise InvalidEvent(f"restockable must be a boolean, got {restockable!r}")

    counterparty = record.get("counterparty_location_id")
    if event_type is EventType.TRANSFER_SHIPPED and counterparty == record["location_id"]:
        raise InvalidEvent("TRANSFER_SHIPPED destination equals its origin location")

    return InventoryEvent(
        event_id=record["event_id"],
        event_type=event_type,
        occurred_at=occurred_at,
        source=record["source"],
        sku=record["sku"],
        location_id=record["location_id"],
        quantity=quantity,
        reason=record.get("reason"),
        transfer_id=record.get("transfer_id"),
        counterparty_location_id=counterparty,
        reservation_id=record.get("reservation_id"),
        channel=record.get("channel"),
        expires_at=expires_at,
        restockable=restockable,
    )
