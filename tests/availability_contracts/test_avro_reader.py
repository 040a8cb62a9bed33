"""The strict InventoryEvent reader agrees with fastavro on every valid record and
refuses the encodings fastavro would misread."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availability_contracts.avro_reader import read_inventory_event
from availability_contracts.errors import InvalidEvent
from availability_contracts.schemas import schema_text
from availability_domain.events import EventType

SCHEMA = fastavro.parse_schema(json.loads(
    schema_text("InventoryEvent").replace('"logicalType"', '"ignoredLogicalType"')))
"""Without the timestamp logical types, as the engine reads it: times stay ints."""
longs = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
texts = st.text(max_size=40)
optional = st.none() | texts

records = st.fixed_dictionaries({
    "event_id": texts, "event_type": st.sampled_from([t.value for t in EventType]),
    "occurred_at": longs, "source": texts, "sku": texts, "location_id": texts,
    "quantity": longs, "reason": optional, "transfer_id": optional,
    "counterparty_location_id": optional, "reservation_id": optional, "channel": optional,
    "expires_at": st.none() | longs, "restockable": st.booleans(),
})


def encode(record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, SCHEMA, record)
    return buffer.getvalue()


@settings(max_examples=500, deadline=None)
@given(records)
def test_reads_what_fastavro_writes(record: dict[str, Any]) -> None:
    data = encode(record)
    decoded, end = read_inventory_event(data)
    assert end == len(data)
    assert decoded == fastavro.schemaless_reader(io.BytesIO(data), SCHEMA) == record


VALID = encode({"event_id": "e-1", "event_type": "RECEIPT", "occurred_at": 1_700_000_000_000,
                "source": "erp", "sku": "SKU-1", "location_id": "DC1", "quantity": 5,
                "reason": None, "transfer_id": None, "counterparty_location_id": None,
                "reservation_id": None, "channel": None, "expires_at": None,
                "restockable": True})


@pytest.mark.parametrize(("offset", "byte", "reason"), [
    (4, 0x13, "event_type index -10"),
    (4, 0x0D, "event_type index -7"),
    (len(VALID) - 7, 0x03, "union index -2"),
    (len(VALID) - 1, 0x02, "byte 2, not 0 or 1"),
])
def test_refuses_what_fastavro_would_misread(offset: int, byte: int, reason: str) -> None:
    corrupted = bytearray(VALID)
    corrupted[offset] = byte
    with pytest.raises(InvalidEvent, match=reason) as info:
        read_inventory_event(bytes(corrupted))
    assert info.value.code == "undecodable"


def test_refuses_truncation_and_bad_text() -> None:
    for cut in range(len(VALID)):
        with pytest.raises(InvalidEvent):
            read_inventory_event(VALID[:cut])
    bad_utf8 = bytearray(VALID)
    bad_utf8[1] = 0xFF
    with pytest.raises(InvalidEvent, match="not valid UTF-8"):
        read_inventory_event(bytes(bad_utf8))
