"""Bounded fuzz of the engine's decode + validate path (no broker).

(a) Any bytes, and any mutation of a valid encoded event, give ``Codec().decode_event``
    either an :class:`InventoryEvent` or an :class:`InvalidEvent` whose code is one of
    REASON_CODES and whose reason is short: any other exception would stop the engine's
    decode step (flow.decode only catches InvalidEvent).
(b) Any field mapping gives ``parse_event`` an event or an InvalidEvent; an event that
    passes re-encodes with the codec and decodes back equal.

Findings are kept below the fuzz tests as explicit regression cases.
"""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from availability_contracts.codec import MAX_RECORD_BYTES, Codec
from availability_contracts.errors import REASON_CODES, InvalidEvent
from availability_contracts.schemas import schema_text
from availability_domain.events import (
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    MAX_TEXT_LENGTH,
    MAX_TIME_MS,
    EventType,
    InventoryEvent,
    decode_event,
    parse_event,
)

CODEC = Codec()
FUZZ = settings(max_examples=1000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_REASON_CHARS = 400
"""Reasons go into dead letters and logs: bounded whatever the input."""

SAMPLES = [
    InventoryEvent("e-1", EventType.RECEIPT, 1_700_000_000_000, "erp", "SKU-1", "DC1", 5),
    InventoryEvent("e-2", EventType.ADJUSTMENT, 1_700_000_000_001, "wms", "SKU-1", "DC1", -2,
                   reason="damaged", restockable=False),
    InventoryEvent("e-3", EventType.TRANSFER_SHIPPED, 1_700_000_000_002, "wms", "SKU-2", "DC1",
                   7, transfer_id="T-1", counterparty_location_id="S001"),
    InventoryEvent("e-4", EventType.RESERVATION_CREATED, 1_700_000_000_003, "shop", "SKU-ü",
                   "S001", 1, reservation_id="R-1", channel="web",
                   expires_at=1_700_000_900_000),
    InventoryEvent("e-5", EventType.COUNT, 0, "pos", "S" * MAX_ID_LENGTH, "S002", MAX_QUANTITY),
]
ENCODED = [CODEC.encode_event(event, "t") for event in SAMPLES]


def outcome(data: bytes | None) -> InventoryEvent | None:
    """The property of (a); returns the event, or None when refused."""
    try:
        event = decode_event(CODEC, data)
    except InvalidEvent as exc:
        assert exc.code in REASON_CODES, exc.code
        assert 0 < len(str(exc)) <= MAX_REASON_CHARS, str(exc)
        hypothesis_event(f"refused: {exc.code}")
        return None
    assert isinstance(event, InventoryEvent)
    assert decode_event(CODEC, CODEC.encode_event(event, "t")) == event
    hypothesis_event("decoded")
    return event


# ---------------------------------------------------------------- (a) bytes -> decode

@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoded event with 1-4 mutations: bit flips, byte overwrites, truncation,
    inserted, deleted and appended bytes."""
    data = bytearray(draw(st.sampled_from(ENCODED)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "delete", "append"]))
        if not data:
            data.extend(draw(st.binary(min_size=1, max_size=8)))
            continue
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            data.extend(draw(st.binary(min_size=1, max_size=64)))
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), mutated()))
@example(b"")
@example(b"\x00")
@example(b"\xff" * 11)
@example(ENCODED[0] + b"\x00")
@example(ENCODED[0][:-1])
@example(b"\x01" * 40)  # negative lengths (zigzag -1) everywhere
@example(b"\xfe\xff\xff\xff\x0f" + b"a" * 20)  # a string claiming 2**31 bytes
@example(b"\x00" * (MAX_RECORD_BYTES + 1))
def test_any_bytes_decode_to_an_event_or_a_coded_refusal(data: bytes) -> None:
    outcome(data)


# ---------------------------------------------------------- (b) mappings -> parse_event

EDGE_INTS = [0, 1, -1, 2, MAX_QUANTITY, MAX_QUANTITY + 1, -MAX_QUANTITY, -MAX_QUANTITY - 1,
             MAX_TIME_MS, MAX_TIME_MS + 1, 2**31, 2**53 + 1, 2**62, 2**63 - 1, 2**63,
             -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**40), 10**4000]
"""10**4000 stays under Python's 4300-digit str() limit; beyond it see
test_parse_event_refuses_ints_too_long_to_print (a finding)."""
NASTY = ["\ud800", "\udfff", "\udcff", "\x00", "\x1f", "\x7f", "\x85", "\u2028", "\u200b",
         "\ufeff", "|", "\U0001f600", " ", "\t", "\n", "\u3000", "é", "\U000e0001"]

any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
good_ids = st.one_of(
    st.sampled_from(["e1", "SKU-1", "DC1", "S001", "web", "R-1", "T-1", "ü", "店舗-1"]),
    st.text(st.characters(categories=("L", "N")), min_size=1, max_size=12),
)
junk_texts = st.one_of(
    st.text(any_char, max_size=16),
    st.text(st.sampled_from([*NASTY, "a", "Z", "0", "-"]), max_size=10),
    st.sampled_from([MAX_ID_LENGTH, MAX_ID_LENGTH + 1, MAX_TEXT_LENGTH, MAX_TEXT_LENGTH + 1,
                     40_000]).flatmap(
        lambda n: st.sampled_from(["x", "é", "\U0001f600", "\ud800", " "]).map(
            lambda c: c * n)),
    st.binary(max_size=24).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["", "  ", "\u3000"]),
)
junk_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(EDGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=8), junk_texts,
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2),
    st.sampled_from(list(EventType)), st.just(object()),
)


def mostly(good: st.SearchStrategy[Any], junk: st.SearchStrategy[Any] = junk_scalars
           ) -> st.SearchStrategy[Any]:
    """Valid nine times in ten, so that passing events are common and one bad field
    usually decides the outcome."""
    return st.integers(0, 9).flatmap(lambda n: junk if n == 0 else good)


times = st.one_of(st.integers(0, MAX_TIME_MS), st.sampled_from([0, MAX_TIME_MS]))
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": mostly(good_ids),
    "event_type": mostly(st.one_of(st.sampled_from([e.value for e in EventType]),
                                   st.sampled_from(list(EventType)))),
    "occurred_at": mostly(times),
    "source": mostly(good_ids),
    "sku": mostly(good_ids),
    "location_id": mostly(st.sampled_from(["DC1", "S001", "S002"])),
    "quantity": mostly(st.one_of(st.integers(-MAX_QUANTITY, MAX_QUANTITY),
                                 st.sampled_from([1, -1, 0, MAX_QUANTITY, -MAX_QUANTITY]))),
    "reason": mostly(st.one_of(st.none(), good_ids, st.text(max_size=MAX_TEXT_LENGTH))),
    "transfer_id": mostly(st.one_of(st.none(), good_ids)),
    "counterparty_location_id": mostly(st.one_of(st.none(), st.sampled_from(["DC1", "S001"]))),
    "reservation_id": mostly(st.one_of(st.none(), good_ids)),
    "channel": mostly(st.one_of(st.none(), st.sampled_from(["web", "amazon"]))),
    "expires_at": mostly(st.one_of(st.none(), times)),
    "restockable": mostly(st.one_of(st.none(), st.booleans())),
}
REQUIRED = ("event_id", "event_type", "occurred_at", "source", "sku", "location_id",
            "quantity")


@st.composite
def mappings(draw: st.DrawFn) -> dict[str, Any]:
    """Every field drawn from FIELDS; the required ones present, the optional ones
    present or absent, and sometimes one required field dropped."""
    record = draw(st.fixed_dictionaries(
        {name: FIELDS[name] for name in REQUIRED},
        optional={name: s for name, s in FIELDS.items() if name not in REQUIRED}))
    if draw(st.integers(0, 9)) == 0:
        del record[draw(st.sampled_from(REQUIRED))]
    return record


def check_mapping(record: dict[str, Any], note: bool = False) -> InventoryEvent | None:
    try:
        event = parse_event(record)
    except InvalidEvent as exc:
        assert exc.code in REASON_CODES, exc.code
        assert 0 < len(str(exc)) <= MAX_REASON_CHARS, str(exc)
        if note:
            hypothesis_event(f"refused: {exc.code}")
        return None
    assert isinstance(event, InventoryEvent)
    data = CODEC.encode_event(event, "t")
    assert decode_event(CODEC, data) == event
    assert parse_event(event.to_record()) == event
    if note:
        hypothesis_event("passed")
    return event


@FUZZ
@given(mappings())
@example({})
@example({**SAMPLES[0].to_record(), "quantity": 2**63})
@example({**SAMPLES[0].to_record(), "sku": "\ud800"})
@example({**SAMPLES[0].to_record(), "reason": "\ud800"})
@example({**SAMPLES[0].to_record(), "source": "a|b\x00"})
@example({**SAMPLES[0].to_record(), "occurred_at": True})
@example({**SAMPLES[0].to_record(), "event_type": EventType.SALE})
@example({**SAMPLES[0].to_record(), "sku": ["SKU-1"]})
@example({**SAMPLES[0].to_record(), "sku": "x" * (MAX_ID_LENGTH + 1)})
@example({**SAMPLES[0].to_record(), "reason": "é" * (MAX_TEXT_LENGTH + 1)})
@example({**SAMPLES[0].to_record(), "channel": "web|1"})
@example({**SAMPLES[0].to_record(), "expires_at": MAX_TIME_MS + 1})
@example({**SAMPLES[0].to_record(), "event_type": ["RECEIPT"]})
def test_any_mapping_parses_to_an_event_that_round_trips_or_is_refused(
        record: dict[str, Any]) -> None:
    check_mapping(record, note=True)


def test_the_fuzzed_mappings_do_produce_valid_events() -> None:
    """Guard for the strategy itself: most valid-looking mappings must pass, otherwise
    the round-trip half of the property is never exercised."""
    record = {name: value for name, value in SAMPLES[3].to_record().items()}
    assert check_mapping(record) == SAMPLES[3]
    for event in SAMPLES:
        assert check_mapping(event.to_record()) == event


# ------------------------------------------------------------------ regression cases

def test_parse_event_refuses_ints_too_long_to_print() -> None:
    """Finding: an int with more than 4300 digits makes the reason's ``shorten(value)``
    (``repr``) raise a plain ValueError ("Exceeds the limit (4300 digits) for integer
    string conversion") instead of an InvalidEvent. Not reachable through Avro (longs are
    64-bit) nor through the JSON reader (it bounds int literals), but parse_event's
    contract is "an event or InvalidEvent"."""
    huge = 10**5000
    for field in ("quantity", "occurred_at", "expires_at"):
        with pytest.raises(InvalidEvent):
            parse_event({**SAMPLES[0].to_record(), field: huge})


def _with_byte(data: bytes, at: int, value: int) -> bytes:
    changed = bytearray(data)
    changed[at] = value
    return bytes(changed)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


ENUM_AT = 1 + len(SAMPLES[0].event_id.encode())
"""Offset of the event_type index in ENCODED[0]: after event_id's length byte and text."""
REASON_AT = len(ENCODED[0]) - 7
"""Offset of the ``reason`` union branch in ENCODED[0]: six null unions and the boolean
end the record."""


@pytest.mark.parametrize("data", [
    # zigzag -10 is symbols[-10] = RECEIPT under Python indexing; Avro has no such index
    pytest.param(_with_byte(ENCODED[0], ENUM_AT, _zigzag(-10)), id="enum-index-minus-10"),
    pytest.param(_with_byte(ENCODED[0], ENUM_AT, _zigzag(-7)), id="enum-index-minus-7"),  # SALE
    # union branch -2 is ["null", "string"][-2] = null
    pytest.param(_with_byte(ENCODED[0], REASON_AT, _zigzag(-2)), id="union-index-minus-2"),
    # a boolean byte must be 0 or 1 (Java's BinaryDecoder reads 2 as false, fastavro true)
    pytest.param(_with_byte(ENCODED[0], len(ENCODED[0]) - 1, 2), id="boolean-byte-2"),
])
def test_out_of_range_avro_indexes_are_refused(data: bytes) -> None:
    """Finding: fastavro reads an enum or union index with Python list indexing, so a
    negative index (invalid Avro) silently picks a symbol or branch from the end, and it
    reads any non-zero boolean byte as true. A corrupted record then decodes as a
    plausible, different event instead of going to the DLQ."""
    assert ENCODED[0][ENUM_AT] == 0 and ENCODED[0][REASON_AT] == 0
    assert ENCODED[0][-1] == 1
    with pytest.raises(InvalidEvent) as info:
        decode_event(CODEC, data)
    assert info.value.code == "undecodable"


def test_offsets_used_by_the_regression_cases() -> None:
    """The hand-computed offsets above point where they claim (else those tests prove
    nothing)."""
    schema = fastavro.parse_schema(json.loads(schema_text("InventoryEvent")))
    record = {**SAMPLES[0].to_record(), "reason": "r"}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    with_reason = buffer.getvalue()
    assert with_reason[REASON_AT] == _zigzag(1)
    assert _with_byte(ENCODED[0], ENUM_AT, _zigzag(3)) == CODEC.encode_event(
        SAMPLES[0]._replace(event_type=EventType.SALE), "t")
