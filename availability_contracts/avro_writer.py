"""Hand-written Avro binary writers for the two snapshot contracts (the hot output path).

fastavro's generic writer costs ~21 us for a channel snapshot with a dozen contributing
locations; these writers emit the same bytes (checked against fastavro by property
tests) in a fraction of that. Field order follows schemas/avro/*.avsc and must change
with them: the tests fail if it does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA, field_names

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


def _encode_long(value: int) -> bytes:
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise OverflowError("a snapshot number is outside the range of an Avro long")
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_CACHE = [_encode_long(v) for v in range(-1024, 4096)]


_RECENT: dict[int, bytes] = {}
"""Recently written large values: timestamps repeat across the snapshots of a batch."""


def long_bytes(value: int) -> bytes:
    if -1024 <= value < 4096:
        return _CACHE[value + 1024]
    found = _RECENT.get(value)
    if found is None:
        if len(_RECENT) > 8192:
            _RECENT.clear()
        found = _RECENT[value] = _encode_long(value)
    return found


def string_bytes(value: str) -> bytes:
    data = value.encode()
    return long_bytes(len(data)) + data


_NULL_BRANCH = b"\x00"
_SECOND_BRANCH = b"\x02"


POSITION_FIELDS = field_names(POSITION_SCHEMA)
CHANNEL_FIELDS = field_names(CHANNEL_SCHEMA)
CONTRIBUTION_FIELDS = ("location_id", "ats", "in_transit")
"""LocationContribution's fields (a nested record of ChannelAvailability)."""


def position_record(record: Mapping[str, Any] | Sequence[Any]) -> bytes:
    """PositionAvailability from a mapping, or from values in schema field order."""
    values = [record[name] for name in POSITION_FIELDS] if isinstance(record, Mapping) else record
    sku, location_id, *numbers = values
    return b"".join((string_bytes(sku), string_bytes(location_id),
                     *[long_bytes(number) for number in numbers]))


def channel_record(record: Mapping[str, Any] | Sequence[Any]) -> bytes:
    """ChannelAvailability from a mapping, or from values in schema field order."""
    if isinstance(record, Mapping):
        channel, sku, location_id, ats, as_of, version, computed_at, locations = (
            record[name] for name in CHANNEL_FIELDS)
        locations = [tuple(item[name] for name in CONTRIBUTION_FIELDS) for item in locations]
    else:
        channel, sku, location_id, ats, as_of, version, computed_at, locations = record
    parts = [
        string_bytes(channel),
        string_bytes(sku),
        _NULL_BRANCH if location_id is None else _SECOND_BRANCH + string_bytes(location_id),
        long_bytes(ats),
        long_bytes(as_of),
        long_bytes(version),
        long_bytes(computed_at),
    ]
    if locations:
        parts.append(long_bytes(len(locations)))
        known = _CONTRIBUTIONS
        for contribution in locations:
            encoded = known.get(contribution)
            if encoded is None:
                encoded = _contribution_bytes(contribution)
            parts.append(encoded)
    parts.append(b"\x00")
    return b"".join(parts)


_CONTRIBUTIONS: dict[Any, bytes] = {}
"""Encoded (location_id, ats, in_transit) contributions: a pooled channel lists up to
every eligible location of its SKU, and most of them are unchanged from its last
snapshot (a 70-location record: 66 us to encode, 12 us with this)."""


def _contribution_bytes(contribution: Sequence[Any]) -> bytes:
    member, member_ats, in_transit = contribution
    encoded = string_bytes(member) + long_bytes(member_ats) + long_bytes(in_transit)
    if len(_CONTRIBUTIONS) >= 65_536:
        _CONTRIBUTIONS.clear()
    _CONTRIBUTIONS[tuple(contribution)] = encoded
    return encoded
