"""The JSON-lines reader of `availability produce`, without Kafka.

The ``REGRESSIONS`` are inputs that used to escape validation (and fail at encode or
produce time, or raise something other than InvalidEvent) or that the fuzz run in
test_event_file_fuzz.py is meant to keep covering.
"""

from __future__ import annotations

import io
import json

import pytest

from availability import event_file
from availability.event_file import (
    MAX_LINE_BYTES,
    BadLine,
    GoodLine,
    RawLine,
    decode_line,
    encode_checked,
    parse_json_event,
    raw_lines,
    read_event_file,
    to_epoch_ms,
)
from availability_contracts.codec import MAX_RECORD_BYTES, Codec
from availability_contracts.errors import InvalidEvent
from availability_domain.events import MAX_ID_LENGTH, MAX_TIME_MS, decode_event

CODEC = Codec()
BASE = {"event_id": "e1", "event_type": "RECEIPT", "occurred_at": 1_700_000_000_000,
        "source": "wms", "sku": "SKU-1", "location_id": "DC1", "quantity": 1}


def _encode(event: object) -> bytes:
    return CODEC.encode_event(event, "events")  # type: ignore[arg-type]


def _line(**fields: object) -> str:
    return json.dumps({**BASE, **fields})


@pytest.mark.parametrize(("value", "expected"), [
    (1795766400000, 1795766400000),
    ("1795766400000", 1795766400000),
    (" -5 ", -5),
    ("2026-11-27T08:00:00Z", 1795766400000),
    ("2026-11-27T09:00:00+01:00", 1795766400000),
    ("2026-11-27T08:00:00", 1795766400000),
    ("2026-11-27T08:00:00.001Z", 1795766400001),
    ("2026-11-27T08:00:00.999999Z", 1795766400999),
    (None, None),
])
def test_times(value: object, expected: int | None) -> None:
    assert to_epoch_ms(value, "occurred_at") == expected


def test_iso_milliseconds_are_exact() -> None:
    for ms in range(1000):
        text = f"2026-11-27T08:00:00.{ms:03d}Z"
        assert to_epoch_ms(text, "t") == 1795766400000 + ms


REGRESSIONS: dict[str, tuple[str, str]] = {
    "quantity 2^63": (_line(quantity=2**63), "beyond the per-event maximum"),
    "quantity -2^63-1": (_line(event_type="ADJUSTMENT", reason="r", quantity=-(2**63) - 1),
                         "beyond the per-event maximum"),
    "occurred_at 2^63": (_line(occurred_at=2**63), "occurred_at must be epoch milliseconds"),
    "occurred_at MAX+1": (_line(occurred_at=MAX_TIME_MS + 1), "year 9999"),
    "expires_at 2^63 as text": (_line(expires_at=str(2**63)), "expires_at must be epoch"),
    "lone surrogate id": (_line(event_id="\ud800"), "lone surrogate"),
    "lone surrogate reason": (_line(reason="ok \udfff"), "lone surrogate"),
    "lone surrogate unknown field": (json.dumps({**BASE, "\ud800": 1}),
                                     "unknown field(s): '\\ud800'"),
    "id over 256": (_line(sku="s" * (MAX_ID_LENGTH + 1)), "over the maximum of 256"),
    "5000-digit quantity literal": ('{"quantity": ' + "9" * 5000 + "}", "number out of range"),
    "5000-digit time string": (_line(occurred_at="9" * 5000), "occurred_at is out of range"),
    "superscript digit time": (_line(occurred_at="\u00b2"), "not ISO-8601 or epoch ms"),
    "double minus time": (_line(occurred_at="--5"), "not ISO-8601 or epoch ms"),
    "deep nesting": ('{"quantity": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
    "nested time": (_line(occurred_at={"a": [1] * 100_000}), "got an object"),
    "nested quantity": (_line(quantity=[[[[1]]]]), "got an array"),
    "nested time 900 deep": (_line(occurred_at=json.loads("[" * 900 + "]" * 900)),
                             "got an array"),
    "year 1 with offset": (_line(occurred_at="0001-01-01T00:00:00+01:00"), "between 0 and"),
    "NaN quantity": ('{"event_id": "e", "event_type": "SALE", "occurred_at": 1, "source": '
                     '"s", "sku": "a", "location_id": "b", "quantity": NaN}',
                     "quantity must be an integer"),
    "Infinity time": (_line(occurred_at=float("inf")), "occurred_at must be epoch"),
    "float time": (_line(occurred_at=1.5), "occurred_at must be epoch"),
    "bool time": (_line(occurred_at=True), "occurred_at must be epoch"),
    "json array line": ("[1, 2]", "a line must be a JSON object"),
    "json string line": ('"\\ud800"', "a line must be a JSON object"),
    "long unknown field name": (json.dumps({**BASE, "0" * 300: 1}), "... (300 long)"),
    "many unknown fields": (json.dumps({**BASE, **{f"x{i}": i for i in range(1000)}}),
                            "and 995 more"),
    "surrogateescaped bytes": (b'{"sku": "\xff\xfe"}'.decode("utf-8", "surrogateescape"),
                               "unknown event_type None"),
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_regressions_raise_invalid_event_with_a_short_reason(case: str) -> None:
    text, reason = REGRESSIONS[case]
    with pytest.raises(InvalidEvent) as caught:
        parse_json_event(text)
    assert reason in str(caught.value)
    assert len(str(caught.value)) < 300
    str(caught.value).encode("utf-8")


def test_huge_field_is_not_echoed() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_json_event(_line(reason="x" * 1_000_000))
    assert "(1000000 long)" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_largest_valid_event_encodes_far_below_the_record_limit() -> None:
    """Every id at its maximum in 4-byte characters, reason too: still < MAX_RECORD_BYTES."""
    wide = "\U0001f600" * MAX_ID_LENGTH
    event = parse_json_event(_line(
        event_type="RESERVATION_CREATED", event_id=wide, source=wide, sku=wide,
        location_id=wide, reservation_id=wide, channel=wide, transfer_id=wide,
        counterparty_location_id=wide, reason="\U0001f600" * 1024,
        occurred_at=MAX_TIME_MS, expires_at=MAX_TIME_MS, quantity=1_000_000_000))
    payload = encode_checked(event, _encode)
    assert len(payload) < MAX_RECORD_BYTES / 4
    assert decode_event(CODEC, payload) == event


def test_encoded_size_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_file, "MAX_RECORD_BYTES", 40)
    with pytest.raises(InvalidEvent) as caught:
        encode_checked(parse_json_event(_line(reason="r" * 50)), _encode)
    assert caught.value.code == "too_large"
    assert "over the maximum of 40" in str(caught.value)


def test_encoder_failure_is_an_invalid_event() -> None:
    def broken(event: object) -> bytes:
        raise ValueError("x" * 10_000)

    with pytest.raises(InvalidEvent) as caught:
        encode_checked(parse_json_event(_line()), broken)
    assert str(caught.value).startswith("cannot be encoded as Avro: ")
    assert len(str(caught.value)) < 200


def test_raw_lines_bound_memory_and_count_long_lines() -> None:
    data = (b"a\n" + b"x" * (MAX_LINE_BYTES * 3 + 5) + b"\n" + b"y" * MAX_LINE_BYTES + b"\n"
            + b"z" * (MAX_LINE_BYTES + 1) + b"\nlast")
    lines = list(raw_lines(io.BytesIO(data)))
    assert [(line.number, line.length) for line in lines] == [
        (1, 1), (2, MAX_LINE_BYTES * 3 + 5), (3, MAX_LINE_BYTES), (4, MAX_LINE_BYTES + 1),
        (5, 4)]
    assert all(len(line.data) <= MAX_LINE_BYTES for line in lines)
    assert lines[4].data == b"last"


def test_long_line_at_end_of_file_without_newline() -> None:
    lines = list(raw_lines(io.BytesIO(b"z" * (MAX_LINE_BYTES * 2 + 3))))
    assert [(line.number, line.length) for line in lines] == [(1, MAX_LINE_BYTES * 2 + 3)]


def test_decode_line_reasons() -> None:
    with pytest.raises(InvalidEvent, match=r"line is 1,048,577 bytes long"):
        decode_line(RawLine(3, b"x" * MAX_LINE_BYTES, MAX_LINE_BYTES + 1))
    with pytest.raises(InvalidEvent, match=r"not valid UTF-8 at byte 3 of the line \(b'\\xff'"):
        decode_line(RawLine(2, b'{"\xff"}', 6))
    with pytest.raises(InvalidEvent, match="not valid UTF-8"):
        decode_line(RawLine(1, b'"\xed\xa0\x80"', 5))  # an encoded surrogate
    assert decode_line(RawLine(1, b"\xef\xbb\xbf{}", 5)) == "{}"
    with pytest.raises(InvalidEvent, match="not valid UTF-8"):
        decode_line(RawLine(1, b"\xef\xbb", 2))


def test_read_event_file_numbers_lines_and_skips_blanks() -> None:
    data = b"\n".join([_line().encode(), b"", b"  \r", b"{bad", _line(event_id="e2").encode()])
    items = list(read_event_file(io.BytesIO(data), _encode))
    assert [type(item) for item in items] == [GoodLine, BadLine, GoodLine]
    assert [item.line_number for item in items] == [1, 4, 5]
    good = items[2]
    assert isinstance(good, GoodLine)
    assert decode_event(CODEC, good.payload) == good.event
