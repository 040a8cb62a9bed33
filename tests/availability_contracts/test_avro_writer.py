"""The hand-written snapshot writers must emit exactly fastavro's bytes."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from availability_contracts import avro_writer
from availability_contracts.schemas import schema_text

longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
small = st.integers(min_value=-5000, max_value=5000)
quantities = st.one_of(small, longs)
ids = st.text(min_size=1, max_size=12)


def _fastavro(name: str, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(json.loads(schema_text(name))),
                               record)
    return buffer.getvalue()


positions = st.fixed_dictionaries({
    "sku": ids, "location_id": ids, "on_hand": quantities, "unsellable": quantities,
    "reserved": quantities, "in_transit": quantities, "safety_stock": quantities,
    "ats": quantities, "as_of": longs, "version": longs, "computed_at": longs,
})
channels = st.fixed_dictionaries({
    "channel": ids, "sku": ids, "location_id": st.none() | ids, "ats": quantities,
    "as_of": longs, "version": longs, "computed_at": longs,
    "locations": st.lists(st.fixed_dictionaries(
        {"location_id": ids, "ats": quantities, "in_transit": quantities}), max_size=5),
})


@settings(max_examples=300)
@given(positions)
def test_position_writer_matches_fastavro(record: dict[str, Any]) -> None:
    assert avro_writer.position_record(record) == _fastavro("PositionAvailability", record)


@settings(max_examples=300)
@given(channels)
def test_channel_writer_matches_fastavro(record: dict[str, Any]) -> None:
    assert avro_writer.channel_record(record) == _fastavro("ChannelAvailability", record)


@settings(max_examples=100)
@given(positions, channels)
def test_snapshot_tuples_encode_like_their_records(position: dict[str, Any],
                                                   channel: dict[str, Any]) -> None:
    from availability_contracts.codec import Codec
    from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA
    from availability_domain.channels import LocationContribution
    from availability_domain.snapshots import ChannelSnapshot, PositionSnapshot

    codec = Codec()
    snapshot = PositionSnapshot(**position)
    assert codec.encode(POSITION_SCHEMA, snapshot, "t") == _fastavro("PositionAvailability",
                                                                     position)
    contributions = tuple(LocationContribution(**item) for item in channel["locations"])
    pooled = ChannelSnapshot(**{**channel, "locations": contributions})
    assert codec.encode(CHANNEL_SCHEMA, pooled, "t") == _fastavro("ChannelAvailability",
                                                                  channel)
