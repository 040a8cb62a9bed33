from __future__ import annotations

from typing import Any

import pytest

from availability_contracts.errors import InvalidEvent
from availability_domain.events import EventType, parse_event

BASE: dict[str, Any] = {
    "event_id": "e-1",
    "event_type": "RECEIPT",
    "occurred_at": 1_700_000_000_000,
    "source": "erp",
    "sku": "SKU-1",
    "location_id": "DC1",
    "quantity": 5,
}


def record(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def test_valid_receipt_defaults() -> None:
    event = parse_event(record())
    assert event.event_type is EventType.RECEIPT
    assert event.restockable is True
    assert event.position_key == "SKU-1|DC1"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_type": "TELEPORT"}, "unknown event_type 'TELEPORT'"),
        ({"event_id": None}, "missing required field 'event_id'"),
        ({"sku": ""}, "field 'sku' must be a non-empty string"),
        ({"sku": "A|B"}, "contains the key delimiter"),
        ({"location_id": "DC|1"}, "contains the key delimiter"),
        ({"quantity": 0}, "RECEIPT quantity must be > 0, got 0"),
        ({"event_type": "SALE", "quantity": -2}, "SALE quantity must be > 0"),
        ({"event_type": "ADJUSTMENT", "quantity": 0, "reason": "x"}, "must be != 0"),
        ({"event_type": "ADJUSTMENT", "quantity": 3}, "ADJUSTMENT requires field 'reason'"),
        ({"event_type": "COUNT", "quantity": -1}, "COUNT quantity must be >= 0"),
        ({"event_type": "TRANSFER_SHIPPED", "transfer_id": "T1"},
         "requires field 'counterparty_location_id'"),
        ({"event_type": "TRANSFER_SHIPPED", "transfer_id": "T1",
          "counterparty_location_id": "DC1"}, "destination equals its origin"),
        ({"event_type": "TRANSFER_RECEIVED", "counterparty_location_id": "DC2"},
         "requires field 'transfer_id'"),
        ({"event_type": "RESERVATION_CREATED", "reservation_id": "R1"},
         "requires field 'channel'"),
        ({"event_type": "RESERVATION_CREATED", "reservation_id": "R|1", "channel": "web"},
         "contains the key delimiter"),
        ({"event_type": "RESERVATION_FULFILLED", "reservation_id": "R1", "quantity": 0},
         "must be > 0"),
        ({"event_type": "RESERVATION_RELEASED"}, "requires field 'reservation_id'"),
        ({"occurred_at": -5}, "occurred_at must be epoch milliseconds"),
        ({"quantity": 2.5}, "quantity must be an integer"),
        ({"quantity": True}, "quantity must be an integer"),
        ({"restockable": "yes"}, "restockable must be a boolean"),
    ],
)
def test_invalid_events_name_their_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEvent, match=None) as info:
        parse_event(record(**changes))
    assert reason in str(info.value)


def test_released_accepts_zero_quantity() -> None:
    event = parse_event(record(event_type="RESERVATION_RELEASED", reservation_id="R1",
                               quantity=0))
    assert event.reservation_id == "R1"


def test_record_round_trip() -> None:
    event = parse_event(record(event_type="RETURN", restockable=False))
    assert parse_event(event.to_record()) == event


def test_event_types_follow_the_schema_symbols_in_order() -> None:
    """The Avro enum index is the wire value: the domain's order must be the schema's."""
    from availability_contracts.schemas import event_types

    assert tuple(kind.value for kind in EventType) == event_types()
