"""Stored frames and the wire form of responses: byte for byte what protobuf writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from availability_api import frames
from availability_api.generated.availability.v1 import availability_pb2 as pb

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
IDS = st.text(st.characters(blacklist_characters="|", blacklist_categories=("Cs",)),
              min_size=1, max_size=12)
CONTRIBUTIONS = st.lists(st.fixed_dictionaries(
    {"location_id": IDS, "ats": INT64, "in_transit": INT64}), max_size=4)
CHANNEL_RECORDS = st.fixed_dictionaries({
    "channel": IDS, "sku": IDS, "location_id": st.none() | IDS, "ats": INT64,
    "as_of": INT64, "version": INT64, "computed_at": INT64, "locations": CONTRIBUTIONS})
POSITION_RECORDS = st.fixed_dictionaries({
    name: INT64 for name in ("on_hand", "unsellable", "reserved", "in_transit",
                             "safety_stock", "ats", "as_of", "version", "computed_at")
} | {"sku": IDS, "location_id": IDS})


@given(st.lists(CHANNEL_RECORDS, max_size=5), INT64)
def test_a_batch_answer_is_what_protobuf_serializes(records: list[dict], lag: int) -> None:
    wire = frames.with_replica_lag(b"".join(map(frames.channel_frame, records)), lag)
    expected = pb.BatchGetAvailabilityResponse(
        results=[pb.GetAvailabilityResponse.FromString(frames.channel_frame(r)).availability
                 for r in records],
        replica_lag=lag)
    assert wire == expected.SerializeToString()
    assert pb.BatchGetAvailabilityResponse.FromString(wire) == expected


@given(CHANNEL_RECORDS, INT64)
def test_a_single_answer_is_what_protobuf_serializes(record: dict, lag: int) -> None:
    frame = frames.channel_frame(record)
    expected = pb.GetAvailabilityResponse.FromString(frame)
    expected.replica_lag = lag
    assert frames.with_replica_lag(frame, lag) == expected.SerializeToString()


@given(st.lists(POSITION_RECORDS, max_size=5), INT64)
def test_a_positions_answer_is_what_protobuf_serializes(records: list[dict], lag: int) -> None:
    wire = frames.with_replica_lag(b"".join(map(frames.position_frame, records)), lag)
    expected = pb.ListPositionsResponse(
        positions=[pb.ListPositionsResponse.FromString(frames.position_frame(r)).positions[0]
                   for r in records],
        replica_lag=lag)
    assert wire == expected.SerializeToString()
