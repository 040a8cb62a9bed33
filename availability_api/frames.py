"""Stored value encoding: each value is field 1 of a response, already in wire form.

Every response message of the API carries its value(s) in field 1 (a singular message
or a repeated one, the wire form is the same). A snapshot is converted once, when the
replica applies it, into the bytes of a one-value response, so the read path never
decodes Avro: a response is the concatenation of stored frames and ``replica_lag``,
sent by gRPC as it is (the HTTP side parses it once, in C).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_contracts.keys import KEY_DELIMITER


def channel_frame(record: Mapping[str, Any]) -> bytes:
    """A decoded ChannelAvailability snapshot as a stored frame (found=true)."""
    value = pb.ChannelAvailability(
        channel=record["channel"],
        sku=record["sku"],
        location_id=record["location_id"] or "",
        found=True,
        ats=record["ats"],
        as_of=record["as_of"],
        version=record["version"],
        computed_at=record["computed_at"],
        locations=[pb.LocationContribution(location_id=c["location_id"], ats=c["ats"],
                                           in_transit=c["in_transit"])
                   for c in record["locations"]],
    )
    return pb.GetAvailabilityResponse(availability=value).SerializeToString()


def missing_channel_frame(channel: str, sku: str, location_id: str = "") -> bytes:
    """The frame answered for a SKU the channel has no number for: found=false, ats 0."""
    value = pb.ChannelAvailability(channel=channel, sku=sku, location_id=location_id)
    return pb.GetAvailabilityResponse(availability=value).SerializeToString()


def missing_frame_for_key(key: str) -> bytes:
    """The not-found frame of a channel key (used when a tombstone deletes it)."""
    parts = key.split(KEY_DELIMITER)
    return missing_channel_frame(parts[0], parts[1] if len(parts) > 1 else "",
                                 parts[2] if len(parts) > 2 else "")


def position_frame(record: Mapping[str, Any]) -> bytes:
    """A decoded PositionAvailability snapshot as a stored frame."""
    value = pb.PositionAvailability(
        sku=record["sku"], location_id=record["location_id"], on_hand=record["on_hand"],
        unsellable=record["unsellable"], reserved=record["reserved"],
        in_transit=record["in_transit"], safety_stock=record["safety_stock"],
        ats=record["ats"], as_of=record["as_of"], version=record["version"],
        computed_at=record["computed_at"],
    )
    return pb.ListPositionsResponse(positions=[value]).SerializeToString()


REPLICA_LAG_TAG = 0x10
"""Field 2 (``replica_lag``, int64, varint) of every response message."""


def with_replica_lag(body: bytes, replica_lag: int) -> bytes:
    """A response in wire form: its concatenated value frames, then ``replica_lag``.

    Byte for byte what protobuf serializes for the same message (a zero lag is left
    out, as proto3 does), so the gRPC side sends it without parsing and re-encoding
    the frames: for 100 SKUs that saves ~100 us of the call."""
    if replica_lag == 0:
        return body
    value = replica_lag & 0xFFFF_FFFF_FFFF_FFFF  # int64 on the wire: two's complement
    varint = bytearray((REPLICA_LAG_TAG,))
    while value > 0x7F:
        varint.append((value & 0x7F) | 0x80)
        value >>= 7
    varint.append(value)
    return body + varint


def channel_frame_version(frame: bytes) -> int:
    return pb.GetAvailabilityResponse.FromString(frame).availability.version


def position_frame_version(frame: bytes) -> int:
    return pb.ListPositionsResponse.FromString(frame).positions[0].version
