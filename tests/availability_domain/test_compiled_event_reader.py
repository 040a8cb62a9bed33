"""The compiled event reader (native/domain) never accepts what the reference refuses,
and what it accepts equals what the reference builds: :func:`decode_event` gives the
same event or the same refusal either way."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from availability.retail_day import retail_workload
from availability_contracts.codec import Codec
from availability_contracts.errors import InvalidEvent
from availability_contracts.schemas import EVENT_SCHEMA, event_types
from availability_domain import events
from availability_domain.events import (
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    MAX_TIME_MS,
    InventoryEvent,
    decode_event,
    parse_event,
)

CODEC = Codec()


def test_the_install_built_the_compiled_event_reader() -> None:
    if os.environ.get("AVAILABILITY_PURE_PYTHON", "") not in ("", "0"):
        assert events._read_valid_event is None
        return
    assert events._read_valid_event is not None, (
        "native/domain was not built: `make setup` builds it with cargo")


compiled_only = pytest.mark.skipif(
    events._read_valid_event is None,
    reason="AVAILABILITY_PURE_PYTHON=1: nothing compiled to compare")


def reference(data: bytes) -> InventoryEvent | str:
    try:
        return parse_event(CODEC.decode_event_record(data))
    except InvalidEvent as exc:
        return f"{exc.code}: {exc}"


def outcome(data: bytes) -> InventoryEvent | str:
    try:
        return decode_event(CODEC, data)
    except InvalidEvent as exc:
        return f"{exc.code}: {exc}"


def check(data: bytes) -> InventoryEvent | None:
    """The compiled result, after checking it against the reference."""
    assert events._read_valid_event is not None
    fast = events._read_valid_event(data, 0)
    expected = reference(data)
    if fast is not None:
        assert type(fast) is InventoryEvent
        assert fast == expected
        assert [type(value) for value in fast] == [type(value) for value in expected]
    assert outcome(data) == expected
    return fast


TEXT = st.sampled_from(["", " ", "  ", "a", "SKU-1", "a b", "x|y", "é", "\t", "a\n", "\x7f",
                        "\u00a0", "\u2028", "Ünïcode", "\x85", "a" * MAX_ID_LENGTH,
                        "a" * (MAX_ID_LENGTH + 1), "r" * 1024, "r" * 1025, "~!@#$%^&*()"])
LONGS = st.sampled_from([0, 1, -1, 2, MAX_QUANTITY, MAX_QUANTITY + 1, -MAX_QUANTITY,
                         -MAX_QUANTITY - 1, MAX_TIME_MS, MAX_TIME_MS + 1, 1_700_000_000_000,
                         2**63 - 1, -(2**63)])


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": TEXT, "occurred_at": LONGS, "source": TEXT, "sku": TEXT,
    "location_id": st.sampled_from(["DC1", "S1"]) | TEXT, "quantity": LONGS,
    "reason": st.none() | TEXT, "transfer_id": st.none() | TEXT,
    "counterparty_location_id": st.none() | st.sampled_from(["DC1", "S1"]) | TEXT,
    "reservation_id": st.none() | TEXT, "channel": st.none() | TEXT,
    "expires_at": st.none() | LONGS, "restockable": st.booleans(),
}


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of a random type with up to three fields drawn from edge values:
    about half of them are still valid."""
    record = {**VALID, "event_type": draw(st.sampled_from(event_types())), "quantity": 2,
              "reason": "recount", "reservation_id": "r1", "channel": "web",
              "expires_at": draw(st.none() | st.just(1_700_000_600_000))}
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        record[name] = draw(FIELDS[name])
    return record


VALID = {"event_id": "e1", "event_type": "TRANSFER_SHIPPED", "occurred_at": 1_700_000_000_000,
         "source": "wms", "sku": "SKU-1", "location_id": "DC1", "quantity": 3,
         "reason": None, "transfer_id": "t1", "counterparty_location_id": "S1",
         "reservation_id": None, "channel": None, "expires_at": None, "restockable": True}


@compiled_only
@settings(max_examples=600, deadline=None)
@given(record=records())
@example(record=VALID)
@example(record={**VALID, "counterparty_location_id": "DC1"})
@example(record={**VALID, "transfer_id": None})
@example(record={**VALID, "sku": "a" * MAX_ID_LENGTH, "source": "x|y"})
@example(record={**VALID, "sku": "a" * (MAX_ID_LENGTH + 1)})
@example(record={**VALID, "event_type": "ADJUSTMENT", "quantity": -MAX_QUANTITY,
                 "reason": "r" * 1024})
@example(record={**VALID, "event_type": "RECEIPT", "quantity": 0})
@example(record={**VALID, "event_type": "COUNT", "quantity": 0, "occurred_at": MAX_TIME_MS})
@example(record={**VALID, "event_type": "COUNT", "occurred_at": MAX_TIME_MS + 1})
def test_the_compiled_reader_agrees_with_the_reference(record: dict[str, Any]) -> None:
    check(CODEC.encode(EVENT_SCHEMA, record, "events"))


def test_plain_valid_events_take_the_compiled_path() -> None:
    if events._read_valid_event is None:
        pytest.skip("AVAILABILITY_PURE_PYTHON=1")
    assert check(CODEC.encode(EVENT_SCHEMA, VALID, "events")) is not None
    assert check(CODEC.encode(EVENT_SCHEMA, {**VALID, "sku": "é"}, "events")) is None


@compiled_only
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_damaged_payloads_get_the_reference_outcome(data: st.DataObject) -> None:
    payload = bytearray(CODEC.encode(EVENT_SCHEMA, data.draw(records()), "events"))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(payload) - 1))
        payload[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload) + 2))
    damaged = bytes(payload[:cut]) + (b"\x00" * (cut - len(payload)))
    check(damaged)


@compiled_only
def test_every_benchmark_event_takes_the_compiled_path_and_equals_the_reference() -> None:
    for event in retail_workload(skus=1_000, stores=200, seed=3).events(20_000):
        assert check(CODEC.encode_event(event, "events")) == event


@compiled_only
def test_a_registry_framed_payload_of_another_schema_takes_the_reference_path() -> None:
    assert CODEC.event_body_start(b"") is None
    assert CODEC.event_body_start(CODEC.encode(EVENT_SCHEMA, VALID, "events")) == 0
