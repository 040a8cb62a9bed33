"""Bounded fuzz run of produce's line parser: any line is either an event that the
publishing codec encodes within MAX_RECORD_BYTES, or an InvalidEvent with a short
reason; never another exception (that would be a traceback after a partial publish).

Findings are kept as explicit cases in test_event_file.py (``REGRESSIONS``).
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from availability.event_file import (
    KNOWN_FIELDS,
    BadLine,
    RawLine,
    check_line,
    parse_json_event,
)
from availability_contracts.codec import MAX_RECORD_BYTES, Codec
from availability_contracts.errors import REASON_CODES, InvalidEvent
from availability_domain.events import (
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    MAX_TEXT_LENGTH,
    MAX_TIME_MS,
    EventType,
    InventoryEvent,
    decode_event,
)

CODEC = Codec()
FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_REASON_CHARS = 300

BASE: dict[str, Any] = {
    "event_id": "e1", "event_type": "RECEIPT", "occurred_at": 1, "source": "s", "sku": "A",
    "location_id": "L", "quantity": 1, "reason": "r", "transfer_id": "t",
    "counterparty_location_id": "L2", "reservation_id": "r1", "channel": "web",
    "expires_at": 2, "restockable": False,
}
"""Valid for every event type, so that one changed field decides the outcome."""

EDGE_INTS = [0, 1, -1, MAX_QUANTITY, MAX_QUANTITY + 1, -MAX_QUANTITY - 1, MAX_TIME_MS,
             MAX_TIME_MS + 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
             2**64, 10**30, -(10**40)]
NASTY_CHARS = ["\ud800", "\udfff", "\udcff", "\x00", "\x1f", "\x7f", "\x85", "\u2028",
               "\ufeff", "|", '"', "\\", "\U0001f600", " ", "\t", "\n"]

any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                         exclude_categories=())
texts = st.one_of(
    st.text(),
    st.text(alphabet=any_char, max_size=20),
    st.text(alphabet=st.sampled_from(NASTY_CHARS + list("aZ09-")), max_size=12),
    st.sampled_from(["2026-11-27T08:00:00Z", "2026-11-27T08:00:00+14:00", "0001-01-01",
                     "9999-12-31T23:59:59.999-12:00", "1795766400000", "-1", "--5", "²",
                     "١٩٧٠", " 12 ", "Z", "", "  ", "2026-02-30", "T", "1e3", "0x10"]),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from([MAX_ID_LENGTH, MAX_ID_LENGTH + 1, MAX_TEXT_LENGTH,
                     MAX_TEXT_LENGTH + 1, 20_000]).map(lambda n: "x" * n),
    st.sampled_from([MAX_ID_LENGTH, MAX_TEXT_LENGTH + 1]).map(lambda n: "\U0001f600" * n),
    st.sampled_from([e.value for e in EventType]),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(10**100), max_value=10**100),
    st.sampled_from(EDGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12)
plausible = st.one_of(
    st.integers(min_value=-MAX_QUANTITY - 2, max_value=MAX_QUANTITY + 2),
    st.integers(min_value=-1, max_value=MAX_TIME_MS + 1),
    st.text(alphabet=any_char, min_size=1, max_size=MAX_ID_LENGTH + 1),
    st.datetimes().map(lambda moment: moment.isoformat()),
    st.booleans(),
)
field_names = st.one_of(st.sampled_from(sorted(KNOWN_FIELDS)), texts)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly a valid event with a few fields replaced, removed or added, so that the
    deep checks (and the valid path) are reached, not only "unknown field"."""
    record: dict[str, Any] = dict(BASE) if draw(st.booleans()) else {}
    record["event_type"] = draw(st.sampled_from([e.value for e in EventType]))
    for name in draw(st.lists(st.sampled_from(sorted(KNOWN_FIELDS)), max_size=3)):
        record[name] = draw(st.one_of(plausible, values))
    for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=2)):
        record.pop(name, None)
    if draw(st.integers(0, 9)) == 0:
        record[draw(field_names)] = draw(values)
    return record


def _dumps(record: dict[str, Any], ensure_ascii: bool) -> str:
    return json.dumps(record, ensure_ascii=ensure_ascii, allow_nan=True)


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 5))
    if kind <= 2:
        return _dumps(draw(records()), draw(st.booleans()))
    if kind == 3:
        text = _dumps(draw(records()), draw(st.booleans()))
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        return text[:at] + draw(st.text(alphabet=any_char, max_size=4)) + text[at + cut:]
    if kind == 4:
        digits = draw(st.integers(1, 6000))
        field = draw(st.sampled_from(["quantity", "occurred_at", "expires_at"]))
        number = draw(st.sampled_from(["9", "-9", "1.", "1e"]))
        return _dumps(BASE, True)[:-1] + f', "{field}": {number}' + "9" * digits + "}"
    if kind == 5:
        return draw(st.one_of(
            st.text(alphabet=st.sampled_from(list(string.printable) + NASTY_CHARS)),
            st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")),
            st.integers(1, 5000).map(lambda n: '{"quantity": ' + "[" * n),
        ))
    raise AssertionError(kind)


def _check_outcome(outcome: InventoryEvent | InvalidEvent) -> None:
    event("invalid: " + outcome.code if isinstance(outcome, InvalidEvent) else "valid")
    if isinstance(outcome, InvalidEvent):
        reason = str(outcome)
        assert len(reason) <= MAX_REASON_CHARS, reason[:400]
        reason.encode("utf-8")
        assert outcome.code in REASON_CODES
        return
    payload = CODEC.encode_event(outcome, "events")
    assert len(payload) <= MAX_RECORD_BYTES
    assert decode_event(CODEC, payload) == outcome


@FUZZ
@given(lines())
def test_parse_json_event_returns_an_encodable_event_or_invalid_event(line: str) -> None:
    try:
        outcome: InventoryEvent | InvalidEvent = parse_json_event(line)
    except InvalidEvent as exc:
        outcome = exc
    _check_outcome(outcome)


@FUZZ
@given(st.one_of(lines().map(lambda s: s.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=200)))
def test_check_line_on_raw_bytes_never_raises(data: bytes) -> None:
    """The byte-level path of produce (UTF-8 and line length before JSON)."""
    line = data.split(b"\n", 1)[0]
    checked = check_line(RawLine(1, line, len(line)),
                         lambda event: CODEC.encode_event(event, "events"))
    if checked is None:
        assert not line.decode("utf-8").strip()
        return
    if isinstance(checked, BadLine):
        assert len(checked.reason) <= MAX_REASON_CHARS
        assert checked.code in REASON_CODES
    else:
        assert len(checked.payload) <= MAX_RECORD_BYTES
        assert decode_event(CODEC, checked.payload) == checked.event
