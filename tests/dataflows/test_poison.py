"""Poison records against the real engine: each goes to the DLQ with its reason code,
the engine keeps running, and valid events published after it are still applied.

Every test uses a one-partition events topic, so "published after the poison" means
"read after it" and the valid follow-ups prove that the flow got past the poison.
Plain-mode poisons share one engine run; registry mode runs against a small in-process
Confluent-compatible registry stand-in (:class:`RegistryStandIn`).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastavro
import pytest

from availability_contracts.codec import DEAD_LETTER_VALUE_LIMIT, MAX_RECORD_BYTES, Codec
from availability_contracts.errors import REASON_CODES
from availability_contracts.schemas import DEAD_LETTER_SCHEMA, POSITION_SCHEMA, schema_text
from availability_contracts.topics import TopicNames
from availability_domain.events import MAX_QUANTITY, EventType, InventoryEvent
from availability_kafka.delivery import ConfirmedProducer
from availability_kafka.topic_reader import latest_by_key, scan_topic

pytestmark = pytest.mark.kafka

ONE_PARTITION = pytest.mark.parametrize("topics", [1], indirect=True)

RULES = """
[locations.DC1]
type = "dc"
safety_stock = 0

[channels.web]
locations = ["DC1"]
"""

MINUTE = 60_000
YEAR_2200_MS = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_REASON_CHARS = 500
"""A dead letter's reason is for people: short whatever the size of the poison."""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


def ev(event_id: str, kind: EventType, quantity: int, at: int, sku: str,
       location: str = "DC1", **extra: Any) -> InventoryEvent:
    return InventoryEvent(event_id=event_id, event_type=kind, occurred_at=at, source="test",
                          sku=sku, location_id=location, quantity=quantity, **extra)


def publish_raw(brokers: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """(key, value) pairs in order; the message size limit is raised for the 1 MB poison
    (the broker's default limit, 1 MiB per batch, still holds)."""
    producer = ConfirmedProducer(brokers, {"message.max.bytes": 1_048_576})
    for key, value in records:
        producer.produce(topic, value, key)
    producer.confirm()


def dead_letters(brokers: str, topic: str, codec: Codec) -> list[dict[str, Any]]:
    return [codec.decode(DEAD_LETTER_SCHEMA, m.value()) for m in scan_topic(brokers, topic, 30)]


def on_hand(brokers: str, topics: TopicNames, codec: Codec) -> dict[str, int]:
    table = latest_by_key(brokers, topics.positions, lambda b: codec.decode(POSITION_SCHEMA, b),
                          timeout=30)
    return {key: record["on_hand"] for key, record in table.items()}


def positions(brokers: str, topics: TopicNames, codec: Codec) -> dict[str, dict[str, Any]]:
    return latest_by_key(brokers, topics.positions, lambda b: codec.decode(POSITION_SCHEMA, b),
                         timeout=30)


def by_sha(letters: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {letter["original_sha256"]: letter for letter in letters}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_letter(letter: dict[str, Any], poison: bytes, code: str, *fragments: str,
                 topic: str) -> None:
    assert letter["reason_code"] == code, letter["reason"]
    assert code in REASON_CODES
    reason = letter["reason"]
    assert 0 < len(reason) <= MAX_REASON_CHARS, reason
    for fragment in fragments:
        assert fragment in reason, (fragment, reason)
    assert letter["source_topic"] == topic
    assert letter["source_partition"] == 0
    assert letter["source_offset"] >= 0
    assert letter["original_length"] == len(poison)
    assert letter["original_sha256"] == sha(poison)
    if len(poison) > DEAD_LETTER_VALUE_LIMIT:
        assert letter["truncated"] is True
        assert len(letter["original_value"]) == DEAD_LETTER_VALUE_LIMIT
        assert poison.startswith(letter["original_value"])
    else:
        assert letter["truncated"] is False
        assert letter["original_value"] == poison


def wait_or_show_log(engine: Any, wait_for: Callable[..., Any], predicate: Callable[[], Any],
                     timeout: float, what: str) -> Any:
    """``wait_for`` that fails with the engine's log (and exit status) attached, at once
    when the engine process has exited."""

    def alive_and(predicate_: Callable[[], Any] = predicate) -> Any:
        if engine.process.poll() is not None:
            raise AssertionError(f"the engine exited while waiting for {what}")
        return predicate_()

    try:
        return wait_for(alive_and, timeout, what)
    except AssertionError as exc:
        status = engine.process.poll()
        raise AssertionError(f"{exc}\nengine exit status: {status}\n--- engine log ---\n"
                             f"{engine.log()[-6000:]}") from None


# --------------------------------------------------------------------------- plain mode

@ONE_PARTITION
def test_plain_mode_poisons_are_dead_lettered_and_later_events_applied(
        brokers: str, topics: TopicNames, codec: Codec, rules_file: Path,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any]) -> None:
    now = int(time.time() * 1000)
    t = now - 30 * MINUTE

    def enc(event: InventoryEvent) -> bytes:
        return codec.encode_event(event, topics.events)

    def valid(event: InventoryEvent) -> tuple[bytes, bytes]:
        return event.position_key.encode(), enc(event)

    garbage = random.Random(20261127).randbytes(1_000_000)
    huge_sku = enc(ev("p-huge-sku", EventType.RECEIPT, 1, t, sku="H" * 600_000))
    long_sku = enc(ev("p-long-sku", EventType.RECEIPT, 1, t, sku="S" * 300))
    overflow = [enc(ev(f"p-2^62-{i}", EventType.RECEIPT, 2**62, t + 2 + i, sku="SKU-Q"))
                for i in range(2)]
    future = enc(ev("p-2200", EventType.RECEIPT, 1000, YEAR_2200_MS, sku="SKU-F"))
    trailing = enc(ev("p-trailing", EventType.RECEIPT, 100, t, sku="SKU-T")) + b"junk!"
    assert len(huge_sku) > MAX_RECORD_BYTES

    records = [
        # ~1 MB of garbage, then a valid event
        (b"SKU-G|DC1", garbage),
        valid(ev("g1", EventType.RECEIPT, 3, t, sku="SKU-G")),
        # a valid Avro event over 64 KiB (600 KB sku), one with a 300-character sku
        (b"poison-huge-sku", huge_sku),
        valid(ev("l1", EventType.RECEIPT, 4, t, sku="SKU-L")),
        (b"poison-long-sku", long_sku),
        valid(ev("s1", EventType.RECEIPT, 5, t, sku="SKU-S")),
        # two RECEIPTs of 2**62 between valid ones: together they would wrap int64
        valid(ev("q1", EventType.RECEIPT, 5, t, sku="SKU-Q")),
        (b"SKU-Q|DC1", overflow[0]),
        (b"SKU-Q|DC1", overflow[1]),
        valid(ev("q2", EventType.RECEIPT, 2, t + 10, sku="SKU-Q")),
        # many maximal receipts (and sales) on one position: far past int32
        *[valid(ev(f"m{i}", EventType.RECEIPT, MAX_QUANTITY, t + i, sku="SKU-M"))
          for i in range(40)],
        valid(ev("m-sale", EventType.SALE, MAX_QUANTITY, t + 50, sku="SKU-M")),
        *[valid(ev(f"n{i}", EventType.SALE, MAX_QUANTITY, t + i, sku="SKU-N"))
          for i in range(40)],
        # a broken clock (year 2200), surrounded by present-day events of the same sku
        valid(ev("f1", EventType.RECEIPT, 6, now - 3 * MINUTE, sku="SKU-F")),
        (b"SKU-F|DC1", future),
        valid(ev("f2", EventType.RECEIPT, 4, now - 2 * MINUTE, sku="SKU-F")),
        valid(ev("f3", EventType.SALE, 1, now - MINUTE, sku="SKU-F")),
        # a valid record followed by junk bytes
        (b"SKU-T|DC1", trailing),
        valid(ev("t1", EventType.RECEIPT, 8, t, sku="SKU-T")),
    ]
    publish_raw(brokers, topics.events, records)
    engine = engine_factory(topics, rules_file).start()

    expected = {"SKU-G|DC1": 3, "SKU-L|DC1": 4, "SKU-S|DC1": 5, "SKU-Q|DC1": 7,
                "SKU-M|DC1": 39 * MAX_QUANTITY, "SKU-N|DC1": -40 * MAX_QUANTITY,
                "SKU-F|DC1": 9, "SKU-T|DC1": 8}
    poisons = [garbage, huge_sku, long_sku, *overflow, future, trailing]
    seen: dict[str, int] = {}

    def settled() -> bool:
        seen.clear()
        seen.update(on_hand(brokers, topics, codec))
        return seen == expected

    try:
        wait_or_show_log(engine, wait_for, settled, 30, f"the positions {expected}")
    except AssertionError as exc:
        raise AssertionError(f"on_hand last seen: {seen}\n{exc}") from None
    letters = wait_or_show_log(
        engine, wait_for,
        lambda: (d := dead_letters(brokers, topics.dlq, codec)) and len(d) >= len(poisons) and d,
        30, f"{len(poisons)} dead letters")
    assert engine.process.poll() is None, "the engine died on a poison record"

    assert len(letters) == len(poisons), [(x["reason_code"], x["reason"]) for x in letters]
    found = by_sha(letters)
    assert set(found) == {sha(p) for p in poisons}
    check_letter(found[sha(garbage)], garbage, "too_large", "1,000,000 bytes",
                 "maximum of 65,536", topic=topics.events)
    assert found[sha(garbage)]["original_key"] == b"SKU-G|DC1"
    check_letter(found[sha(huge_sku)], huge_sku, "too_large", f"{len(huge_sku):,} bytes",
                 topic=topics.events)
    check_letter(found[sha(long_sku)], long_sku, "too_long", "'sku'", "300 characters",
                 topic=topics.events)
    for poison in overflow:
        check_letter(found[sha(poison)], poison, "quantity", str(2**62),
                     "per-event maximum", topic=topics.events)
    check_letter(found[sha(future)], future, "future_event", "2200-01-01",
                 "ahead of the engine clock", topic=topics.events)
    check_letter(found[sha(trailing)], trailing, "trailing_bytes", "5 byte(s) follow",
                 topic=topics.events)

    table = positions(brokers, topics, codec)
    assert table["SKU-M|DC1"]["ats"] == 39 * MAX_QUANTITY
    assert table["SKU-N|DC1"]["ats"] == 0
    assert table["SKU-F|DC1"]["as_of"] == now - MINUTE, "the year-2200 event moved as_of"
    assert table["SKU-Q|DC1"]["as_of"] == t + 10
    assert engine.process.poll() is None
    assert engine.stop() in (0, 130)


# ------------------------------------------------------------------------ registry mode

class RegistryStandIn:
    """A Confluent-compatible schema registry in a thread: POST
    /subjects/{subject}/versions -> {"id"}, GET /schemas/ids/{id} -> {"schema"} or 404
    40403. ``down`` makes it answer every request with 503 until cleared."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schemas: dict[int, dict[str, str]] = {}
        self.down = threading.Event()
        self.requests: list[tuple[str, str, int]] = []
        """(method, path, status) of every request answered."""
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                with stand_in.lock:
                    stand_in.requests.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if stand_in.down.is_set():
                    self._reply(503, {"error_code": 50301, "message": "unavailable"})
                    return
                parts = self.path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
                    self._reply(404, {"error_code": 404, "message": "no such endpoint"})
                    return
                request = json.loads(body)
                schema_id = stand_in.add(request["schema"], request.get("schemaType", "AVRO"))
                self._reply(200, {"id": schema_id})

            def do_GET(self) -> None:
                if stand_in.down.is_set():
                    self._reply(503, {"error_code": 50301, "message": "unavailable"})
                    return
                prefix = "/schemas/ids/"
                tail = self.path[len(prefix):] if self.path.startswith(prefix) else ""
                with stand_in.lock:
                    entry = stand_in.schemas.get(int(tail)) if tail.isdigit() else None
                if entry is None:
                    self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                    return
                self._reply(200, entry)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, schema: str, schema_type: str = "AVRO") -> int:
        """Register directly (a global id per distinct schema, as Confluent does)."""
        with self.lock:
            for schema_id, entry in self.schemas.items():
                if entry["schema"] == schema and entry.get("schemaType", "AVRO") == schema_type:
                    return schema_id
            schema_id = len(self.schemas) + 1
            entry = {"schema": schema}
            if schema_type != "AVRO":
                entry["schemaType"] = schema_type
            self.schemas[schema_id] = entry
            return schema_id

    def refused(self, path: str) -> int:
        with self.lock:
            return sum(1 for _, p, status in self.requests if p == path and status == 503)


@pytest.fixture
def registry() -> Iterator[RegistryStandIn]:
    stand_in = RegistryStandIn()
    stand_in.thread.start()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


def _newer_event_schema() -> dict[str, Any]:
    """A compatible evolution of InventoryEvent: one more optional field."""
    schema = json.loads(schema_text("InventoryEvent"))
    schema["fields"].append({"name": "loyalty_tier", "type": ["null", "string"],
                             "default": None})
    return schema


def framed(schema_id: int, schema: dict[str, Any] | str, record: dict[str, Any]) -> bytes:
    """Confluent framing by hand (magic 0, 4-byte big-endian id, Avro body): no registry
    request, so it works while the registry is down."""
    if isinstance(schema, str):
        schema = json.loads(schema)
    buffer = io.BytesIO()
    buffer.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


@ONE_PARTITION
def test_registry_unknown_schema_and_outage(
        brokers: str, topics: TopicNames, rules_file: Path, registry: RegistryStandIn,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any]) -> None:
    now = int(time.time() * 1000)
    codec = Codec(registry.url)
    event_schema = schema_text("InventoryEvent")
    first = ev("r1", EventType.RECEIPT, 5, now - 5 * MINUTE, sku="SKU-R")
    unknown = framed(999, event_schema,
                     ev("r-unknown", EventType.RECEIPT, 100, now - 4 * MINUTE,
                        sku="SKU-R").to_record())
    # an id the registry knows, but of another record type (the position snapshot)
    position_schema = schema_text(POSITION_SCHEMA)
    other_type = framed(registry.add(position_schema), position_schema, {
        "sku": "SKU-R", "location_id": "DC1", "on_hand": 1, "unsellable": 0, "reserved": 0,
        "in_transit": 0, "safety_stock": 0, "ats": 1, "as_of": now, "version": 1,
        "computed_at": now})
    unframed = Codec().encode_event(
        ev("r-plain", EventType.RECEIPT, 100, now - 4 * MINUTE, sku="SKU-R"), topics.events)
    publish_raw(brokers, topics.events, [
        (first.position_key.encode(), codec.encode_event(first, topics.events)),
        (b"SKU-R|DC1", unknown),
        (b"SKU-R|DC1", other_type),
        (b"SKU-R|DC1", unframed),
        (b"SKU-R|DC1", codec.encode_event(
            ev("r2", EventType.RECEIPT, 2, now - 3 * MINUTE, sku="SKU-R"), topics.events)),
    ])
    engine = engine_factory(topics, rules_file, extra=("--schema-registry", registry.url))
    engine.start()
    wait_or_show_log(engine, wait_for,
                     lambda: on_hand(brokers, topics, codec).get("SKU-R|DC1") == 7, 30,
                     "SKU-R|DC1 on_hand 7 (the event after the unknown id applied)")
    letters = wait_or_show_log(
        engine, wait_for,
        lambda: (d := dead_letters(brokers, topics.dlq, codec)) and len(d) >= 3 and d, 30,
        "three dead letters")
    assert len(letters) == 3, letters
    found = by_sha(letters)
    check_letter(found[sha(unknown)], unknown, "unknown_schema", "schema id 999",
                 topic=topics.events)
    check_letter(found[sha(other_type)], other_type, "undecodable", "cannot decode",
                 topic=topics.events)
    check_letter(found[sha(unframed)], unframed, "undecodable", "schema-registry header",
                 topic=topics.events)
    assert engine.process.poll() is None

    # The registry goes away (503) while events written with a schema id the engine has
    # never fetched arrive: they wait, and are applied once the registry answers again.
    newer = _newer_event_schema()
    newer_id = registry.add(json.dumps(newer))
    during = [
        ev("r3", EventType.RECEIPT, 10, now - 2 * MINUTE, sku="SKU-R"),
        ev("r4", EventType.RECEIPT, 1, now - 2 * MINUTE, sku="SKU-R2"),
    ]
    registry.down.set()
    publish_raw(brokers, topics.events, [
        (event.position_key.encode(),
         framed(newer_id, newer, {**event.to_record(), "loyalty_tier": "gold"}))
        for event in during
    ])
    path = f"/schemas/ids/{newer_id}"
    wait_or_show_log(engine, wait_for, lambda: registry.refused(path) >= 2, 15,
                     "the engine to hit the registry outage")
    time.sleep(1.5)
    assert on_hand(brokers, topics, codec) == {"SKU-R|DC1": 7}, "applied without a schema?"
    assert engine.process.poll() is None, "the engine died while the registry was down"
    registry.down.clear()

    wait_or_show_log(engine, wait_for,
                     lambda: on_hand(brokers, topics, codec) == {"SKU-R|DC1": 17,
                                                                 "SKU-R2|DC1": 1},
                     30, "the events published during the outage to be applied")
    letters = dead_letters(brokers, topics.dlq, codec)
    assert len(letters) == 3, [(x["reason_code"], x["reason"]) for x in letters]
    assert engine.process.poll() is None
    assert engine.stop() in (0, 130)


@ONE_PARTITION
@pytest.mark.parametrize(("schema_type", "schema"), [
    ("PROTOBUF", 'syntax = "proto3";\nmessage InventoryEvent { string event_id = 1; }\n'),
    ("JSON", json.dumps({"type": "object", "properties": {"event_id": {"type": "string"}}})),
], ids=["protobuf", "json-schema"])
def test_registry_id_of_a_non_avro_schema_is_dead_lettered(
        brokers: str, topics: TopicNames, rules_file: Path, registry: RegistryStandIn,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any],
        schema_type: str, schema: str) -> None:
    """A Confluent registry also holds Protobuf and JSON Schema schemas, with the same
    framing: a record whose id names one is not an InventoryEvent and must be
    dead-lettered like an unknown id, not stop the engine."""
    now = int(time.time() * 1000)
    codec = Codec(registry.url)
    foreign_id = registry.add(schema, schema_type)
    poison = b"\x00" + foreign_id.to_bytes(4, "big") + b"\x0a\x02e1"
    publish_raw(brokers, topics.events, [
        (b"SKU-P|DC1", codec.encode_event(
            ev("p1", EventType.RECEIPT, 5, now - 2 * MINUTE, sku="SKU-P"), topics.events)),
        (b"SKU-P|DC1", poison),
        (b"SKU-P|DC1", codec.encode_event(
            ev("p2", EventType.RECEIPT, 2, now - MINUTE, sku="SKU-P"), topics.events)),
    ])
    engine = engine_factory(topics, rules_file, extra=("--schema-registry", registry.url))
    engine.start()
    wait_or_show_log(engine, wait_for,
                     lambda: on_hand(brokers, topics, codec).get("SKU-P|DC1") == 7, 30,
                     "SKU-P|DC1 on_hand 7 (the event after the poison applied)")
    letters = wait_or_show_log(engine, wait_for,
                               lambda: dead_letters(brokers, topics.dlq, codec), 30,
                               "the dead letter")
    assert len(letters) == 1, letters
    assert letters[0]["reason_code"] in ("unknown_schema", "undecodable"), letters[0]
    assert 0 < len(letters[0]["reason"]) <= MAX_REASON_CHARS
    assert letters[0]["original_value"] == poison
    assert engine.process.poll() is None
    assert engine.stop() in (0, 130)
