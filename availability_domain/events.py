"""Canonical inventory events and the rules that make one valid.

Validation lives here, not in the codec, because "a SALE needs q > 0" is a business
rule; the codec only turns bytes into a mapping and calls :func:`parse_event`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from availability_contracts.errors import InvalidEvent, shorten
from availability_contracts.hot_codec import load_compiled
from availability_contracts.keys import KEY_DELIMITER, position_key
from availability_contracts.times import HOUR_MS, iso_ms

MAX_ID_LENGTH = 256
"""Longest id (event_id, sku, location_id, transfer_id, counterparty_location_id,
reservation_id, channel) and ``source``, in characters: ids become Kafka keys and
RocksDB keys, so they must stay small."""
MAX_TEXT_LENGTH = 1024
"""Longest free text (``reason``), in characters."""
MAX_QUANTITY = 1_000_000_000
"""Largest |quantity| of one event. With it, no position sum can come near int64."""
MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last instant an ISO-8601 time can name."""
DEFAULT_MAX_FUTURE_SKEW_MS = HOUR_MS
"""How far occurred_at may lie ahead of the engine clock by default (1 h)."""


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
        return position_key(self.sku, self.location_id)

    def locations(self) -> tuple[str, ...]:
        """The locations this event can change: its own, and a shipped transfer's
        destination (whose in_transit it raises)."""
        if self.event_type is EventType.TRANSFER_SHIPPED:
            return self.location_id, self.counterparty_location_id or ""
        return (self.location_id,)

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
            raise InvalidEvent(f"missing required field {name!r}", "missing_field")
        return
    if type(value) is not str or not value or value.isspace():
        suffix = "" if required else " when present"
        raise InvalidEvent(f"field {name!r} must be a non-empty string{suffix}")
    limit = MAX_TEXT_LENGTH if name == "reason" else MAX_ID_LENGTH
    if len(value) > limit:
        raise InvalidEvent(f"field {name!r} is {len(value)} characters long, over the "
                           f"maximum of {limit}: {shorten(value)}", "too_long")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(f"field {name!r} is not valid Unicode text (a lone surrogate): "
                           f"{shorten(value)}") from None
    if name in _ID_FIELDS and not value.isprintable() and not _printable_enough(value):
        raise InvalidEvent(f"field {name!r} contains control characters: {shorten(value)}")
    if KEY_DELIMITER in value and name in _ID_FIELDS:
        raise InvalidEvent(
            f"field {name!r} contains the key delimiter {KEY_DELIMITER!r}: {shorten(value)}",
            "id_delimiter",
        )


def _printable_enough(value: str) -> bool:
    """Ids may hold any printable text, including non-ASCII spaces; C0/C1 controls and
    lone surrogates are refused (they break keys, logs and terminals)."""
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000
                   for c in value)


def _check_time(name: str, value: Any) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TIME_MS:
        raise InvalidEvent(f"{name} must be epoch milliseconds between 0 and {MAX_TIME_MS} "
                           f"(year 9999), got {shorten(value)}")


def parse_event(record: Mapping[str, Any]) -> InventoryEvent:
    """Build an :class:`InventoryEvent` from a field mapping, or raise :class:`InvalidEvent`.

    Times must already be epoch milliseconds (the codec and the JSON reader convert).
    """
    get = record.get
    raw_type = get("event_type")
    event_type = _TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if event_type is None:
        raise InvalidEvent(f"unknown event_type {shorten(raw_type)}", "unknown_type")

    for name in _REQUIRED_STRINGS:
        _check_string(name, get(name), True)
    optional = [get(name) for name in _OPTIONAL_STRINGS]
    for name, value in zip(_OPTIONAL_STRINGS, optional, strict=True):
        if value is not None:
            _check_string(name, value, False)
    reason, transfer_id, counterparty, reservation_id, channel = optional
    for name in _REQUIRED_BY_TYPE.get(event_type, ()):
        if get(name) is None:
            raise InvalidEvent(f"{event_type} requires field {name!r}", "missing_field")

    occurred_at = get("occurred_at")
    if occurred_at is None:
        raise InvalidEvent("missing required field 'occurred_at'", "missing_field")
    _check_time("occurred_at", occurred_at)
    expires_at = get("expires_at")
    if expires_at is not None:
        _check_time("expires_at", expires_at)

    quantity = get("quantity")
    if quantity is None:
        raise InvalidEvent("missing required field 'quantity'", "missing_field")
    if type(quantity) is not int:
        raise InvalidEvent(f"quantity must be an integer, got {shorten(quantity)}", "quantity")
    if not -MAX_QUANTITY <= quantity <= MAX_QUANTITY:
        raise InvalidEvent(f"quantity {shorten(quantity)} is beyond the per-event maximum of "
                           f"{MAX_QUANTITY:,} units", "quantity")
    rule = _QUANTITY_RULE[event_type]
    if (quantity <= 0 if rule is _POSITIVE else quantity < 0 if rule is _NON_NEGATIVE
            else quantity == 0):
        raise InvalidEvent(f"{event_type} quantity must be {rule}, got {quantity}", "quantity")

    restockable = get("restockable")
    if restockable is None:
        restockable = True
    elif type(restockable) is not bool:
        raise InvalidEvent(f"restockable must be a boolean, got {shorten(restockable)}")

    location_id = record["location_id"]
    if event_type is EventType.TRANSFER_SHIPPED and counterparty == location_id:
        raise InvalidEvent("TRANSFER_SHIPPED destination equals its origin location")

    return InventoryEvent(
        record["event_id"], event_type, occurred_at, record["source"], record["sku"],
        location_id, quantity, reason, transfer_id, counterparty, reservation_id, channel,
        expires_at, restockable,
    )


def check_event_time(event: InventoryEvent, now_ms: int, max_future_skew_ms: int) -> None:
    """Refuse an event dated too far ahead of the engine clock.

    One event from a source with a broken clock (say the year 2200) would otherwise move
    its SKU's watermark so far that every present-day event falls outside the dedupe
    horizon; the skew bound keeps a bad clock from freezing a SKU.
    """
    if event.occurred_at > now_ms + max_future_skew_ms:
        raise InvalidEvent(
            f"occurred_at {iso_ms(event.occurred_at)} is more than "
            f"{max_future_skew_ms // 1000} s ahead of the engine clock ({iso_ms(now_ms)})",
            "future_event",
        )


class EventRecordDecoder(Protocol):
    """What turns payload bytes into an event's field mapping (the contracts' codec)."""

    def decode_event_record(self, data: bytes | None) -> Mapping[str, Any]: ...

    def event_body_start(self, data: bytes | None) -> int | None: ...


_read_valid_event = getattr(load_compiled("availability_domain._core"), "read_valid_event",
                            None)
"""native/domain's reader: the event of a payload it is sure is valid, else None."""


def decode_event(codec: EventRecordDecoder, data: bytes | None) -> InventoryEvent:
    """Payload bytes to a validated event, or :class:`InvalidEvent` with the reason.

    The compiled reader, where built, turns a payload it is sure :func:`parse_event`
    accepts straight into the event (equal to what this module builds); every other
    payload, and every refusal, takes the reference path."""
    if _read_valid_event is not None and data is not None:
        start = codec.event_body_start(data)
        if start is not None:
            event: InventoryEvent | None = _read_valid_event(data, start)
            if event is not None:
                return event
    return parse_event(codec.decode_event_record(data))
