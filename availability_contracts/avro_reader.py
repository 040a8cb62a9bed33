"""A strict, hand-written reader of the InventoryEvent contract (the hot input path).

fastavro reads enum and union indexes with Python list indexing, so a corrupted record
whose index is negative decodes as another, plausible event (index -7 of the event
type is SALE), and it takes any non-zero byte as boolean true. Here every index, length
and boolean is checked and the text must be valid UTF-8, so such a record is refused
with its reason instead of being applied. Field order follows
schemas/avro/InventoryEvent.avsc; tests check the reader against fastavro.
"""

from __future__ import annotations

from typing import Any

from availability_contracts.errors import InvalidEvent
from availability_contracts.schemas import event_types

EVENT_TYPES = event_types()

_OPTIONAL_STRINGS = ("reason", "transfer_id", "counterparty_location_id", "reservation_id",
                     "channel")
_LONG_LIMIT = 1 << 64


def _long(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at ``pos``: (value, position after it)."""
    try:
        byte = data[pos]
    except IndexError:
        raise InvalidEvent("the record ends early", "undecodable") from None
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    result = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        try:
            byte = data[pos]
        except IndexError:
            raise InvalidEvent("the record ends early", "undecodable") from None
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            raise InvalidEvent("a number is encoded in more than 10 bytes", "undecodable")
    if result >= _LONG_LIMIT:
        raise InvalidEvent("a number is larger than an Avro long", "undecodable")
    return (result >> 1) ^ -(result & 1), pos


def _string(data: bytes, pos: int, name: str) -> tuple[str, int]:
    length, pos = _long(data, pos)
    end = pos + length
    if length < 0 or end > len(data):
        raise InvalidEvent(f"field {name!r} has an impossible length {length}", "undecodable")
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise InvalidEvent(f"field {name!r} is not valid UTF-8", "undecodable") from None


def _branch(data: bytes, pos: int, name: str) -> tuple[bool, int]:
    """A ["null", T] union: (True when T follows, position after the index)."""
    index, pos = _long(data, pos)
    if index == 0:
        return False, pos
    if index == 1:
        return True, pos
    raise InvalidEvent(f"field {name!r} has union index {index}, not 0 or 1", "undecodable")


def read_inventory_event(data: bytes, pos: int = 0) -> tuple[dict[str, Any], int]:
    """The field mapping of one InventoryEvent at ``pos`` and the position after it."""
    record: dict[str, Any] = {}
    record["event_id"], pos = _string(data, pos, "event_id")
    index, pos = _long(data, pos)
    if not 0 <= index < len(EVENT_TYPES):
        raise InvalidEvent(f"event_type index {index} is not one of the "
                           f"{len(EVENT_TYPES)} symbols", "undecodable")
    record["event_type"] = EVENT_TYPES[index]
    record["occurred_at"], pos = _long(data, pos)
    record["source"], pos = _string(data, pos, "source")
    record["sku"], pos = _string(data, pos, "sku")
    record["location_id"], pos = _string(data, pos, "location_id")
    record["quantity"], pos = _long(data, pos)
    for name in _OPTIONAL_STRINGS:
        present, pos = _branch(data, pos, name)
        if present:
            record[name], pos = _string(data, pos, name)
        else:
            record[name] = None
    present, pos = _branch(data, pos, "expires_at")
    if present:
        record["expires_at"], pos = _long(data, pos)
    else:
        record["expires_at"] = None
    try:
        flag = data[pos]
    except IndexError:
        raise InvalidEvent("the record ends early", "undecodable") from None
    if flag > 1:
        raise InvalidEvent(f"field 'restockable' has byte {flag}, not 0 or 1", "undecodable")
    record["restockable"] = flag == 1
    return record, pos + 1
