from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import fastavro
import pytest

from availability_contracts.codec import Codec
from availability_contracts.errors import InvalidEvent
from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA, schema_text
from availability_domain.events import EventType, InventoryEvent, decode_event

EVENT = InventoryEvent(
    event_id="e-1", event_type=EventType.RESERVATION_CREATED, occurred_at=1_700_000_000_123,
    source="shopify", sku="SKU-1", location_id="DC1", quantity=2, reservation_id="R-9",
    channel="web", expires_at=1_700_000_900_000,
)


def test_event_round_trip_keeps_epoch_millis(codec: Codec) -> None:
    assert decode_event(codec, codec.encode_event(EVENT, "t")) == EVENT


def test_snapshot_round_trips(codec: Codec) -> None:
    position = {"sku": "S", "location_id": "L", "on_hand": -3, "unsellable": 1, "reserved": 2,
                "in_transit": 4, "safety_stock": 1, "ats": 0, "as_of": 5, "version": 7,
                "computed_at": 9}
    assert codec.decode(POSITION_SCHEMA, codec.encode(POSITION_SCHEMA, position, "t")) == position
    channel = {"channel": "web", "sku": "S", "location_id": None, "ats": 3, "as_of": 5,
               "version": 1, "computed_at": 6,
               "locations": [{"location_id": "DC1", "ats": 3, "in_transit": 0}]}
    assert codec.decode(CHANNEL_SCHEMA, codec.encode(CHANNEL_SCHEMA, channel, "t")) == channel


def _raw(record: dict[str, Any]) -> bytes:
    schema = fastavro.parse_schema(json.loads(schema_text("InventoryEvent")))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty message value"),
        (None, "empty message value"),
        (b"\x02", "cannot decode Avro InventoryEvent"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "cannot decode Avro InventoryEvent"),
    ],
)
def test_undecodable_payloads_have_a_reason(codec: Codec, payload: bytes | None,
                                            reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(codec, payload)
    assert reason in str(info.value)


def test_decoded_but_invalid_event_has_validation_reason(codec: Codec) -> None:
    record = {**EVENT.to_record(), "event_type": "SALE", "quantity": -1}
    with pytest.raises(InvalidEvent, match="SALE quantity must be > 0"):
        decode_event(codec, _raw(record))


def test_unknown_enum_symbol_index_is_a_decode_error(codec: Codec) -> None:
    data = bytearray(_raw(EVENT.to_record()))
    # event_id "e-1" is length-prefixed (1 byte) + 3 bytes; the enum index follows.
    data[4] = 0x7E  # zigzag 63: no such symbol
    with pytest.raises(InvalidEvent, match="cannot decode"):
        decode_event(codec, bytes(data))


def _newer_schema() -> dict[str, Any]:
    schema = json.loads(schema_text("InventoryEvent"))
    schema["fields"].append({"name": "loyalty_tier", "type": ["null", "string"],
                             "default": None})
    return schema


def test_plain_avro_refuses_bytes_after_the_record(codec: Codec) -> None:
    """Plain Avro carries no schema: bytes after the record are indistinguishable from
    junk, so they are refused (a newer writer needs registry framing; see below)."""
    newer = fastavro.parse_schema(_newer_schema())
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, newer, {**EVENT.to_record(), "loyalty_tier": "gold"})
    with pytest.raises(InvalidEvent, match="byte\\(s\\) follow the Avro") as info:
        decode_event(codec, buffer.getvalue())
    assert info.value.code == "trailing_bytes"
    valid = codec.encode_event(EVENT, "t")
    with pytest.raises(InvalidEvent, match="3 byte"):
        decode_event(codec, valid + b"\x00\x01\x02")


class _Registry(BaseHTTPRequestHandler):
    """A tiny in-memory Confluent-compatible registry (register, fetch by id)."""

    schemas: ClassVar[list[str]] = []

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body["schema"] not in self.schemas:
            self.schemas.append(body["schema"])
        self._reply({"id": self.schemas.index(body["schema"]) + 1})

    def do_GET(self) -> None:
        schema_id = int(self.path.rsplit("/", 1)[-1])
        self._reply({"schema": self.schemas[schema_id - 1]})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry_url() -> Iterator[str]:
    _Registry.schemas = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_registry_framing_round_trip(registry_url: str) -> None:
    codec = Codec(registry_url)
    data = codec.encode_event(EVENT, "inventory.events")
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 1
    assert decode_event(Codec(registry_url), data) == EVENT


def test_registry_evolution_resolves_newer_writer(registry_url: str) -> None:
    newer = Codec(registry_url)
    newer_text = json.dumps(_newer_schema())
    schema_id = newer.registry.register("inventory.events-value", newer_text)  # type: ignore[union-attr]
    buffer = io.BytesIO()
    buffer.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(_newer_schema()),
                               {**EVENT.to_record(), "loyalty_tier": None})
    assert decode_event(Codec(registry_url), buffer.getvalue()) == EVENT


def test_registry_mode_rejects_unframed_payload(registry_url: str, codec: Codec) -> None:
    with pytest.raises(InvalidEvent, match="schema-registry header"):
        decode_event(Codec(registry_url), codec.encode_event(EVENT, "t"))
