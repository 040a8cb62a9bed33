"""Canonical events as JSON lines: the format of `availability produce --file`.

Same field names as the Avro contract; ``occurred_at``/``expires_at`` may be epoch
milliseconds or ISO-8601 (a time without an offset is read as UTC).

A line is checked all the way to the bytes that would be published (JSON, UTF-8,
field rules, Avro encoding and record size), so that a file can be refused before any
of it is published; every refusal is an :class:`InvalidEvent` whose reason is short
however large the input.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from availability_contracts.codec import MAX_RECORD_BYTES
from availability_contracts.errors import InvalidEvent, shorten
from availability_contracts.times import parse_iso_ms
from availability_domain.events import InventoryEvent, parse_event

TIME_FIELDS = ("occurred_at", "expires_at")
KNOWN_FIELDS = frozenset(
    {"event_id", "event_type", "occurred_at", "source", "sku", "location_id", "quantity",
     "reason", "transfer_id", "counterparty_location_id", "reservation_id", "channel",
     "expires_at", "restockable"}
)

MAX_LINE_BYTES = 1 << 20
"""Longest line read (without its newline): far above any valid event, low enough that a
runaway line (a dump without newlines) is refused without being held in memory."""
MAX_INT_DIGITS = 32
"""Longest integer literal parsed: every valid number has at most 15 digits, and the
bound keeps ``int()`` away from Python's 4300-digit limit and its ValueError."""

_EPOCH_MS = re.compile(r"-?[0-9]+")
_JSON_TYPE_NAMES: dict[type, str] = {dict: "an object", list: "an array"}


def to_epoch_ms(value: Any, field: str) -> int | None:
    """Epoch milliseconds from an int, a digit string or ISO-8601; range checks are
    left to :func:`parse_event`."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidEvent(f"{field} must be epoch milliseconds or ISO-8601, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if _EPOCH_MS.fullmatch(text):
            if len(text) > MAX_INT_DIGITS:
                raise InvalidEvent(f"{field} is out of range: {shorten(value)}")
            return int(text)
        try:
            return parse_iso_ms(text)
        except ValueError:
            raise InvalidEvent(f"{field} is not ISO-8601 or epoch ms: {shorten(value)}") from None
        except OverflowError:
            raise InvalidEvent(f"{field} is out of range: {shorten(value)}") from None
    raise InvalidEvent(f"{field} must be epoch milliseconds or ISO-8601, got {shorten(value)}")


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidEvent(f"number out of range: {shorten(literal)}")
    return int(literal)


_DECODER = json.JSONDecoder(parse_int=_bounded_int)


def _field_name(name: str) -> str:
    return name if len(name) <= 40 and name.isprintable() else shorten(name, 40)


def parse_json_event(text: str) -> InventoryEvent:
    """One JSON line to a validated event, or :class:`InvalidEvent`: never another
    exception, whatever the text (huge numbers, deep nesting, lone surrogates)."""
    try:
        record = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc.msg} at column {exc.colno}",
                           "undecodable") from None
    except RecursionError:
        raise InvalidEvent("not valid JSON: nested too deeply", "undecodable") from None
    if not isinstance(record, dict):
        raise InvalidEvent("a line must be a JSON object", "undecodable")
    unknown = sorted(set(record) - KNOWN_FIELDS)
    if unknown:
        shown = ", ".join(_field_name(name) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidEvent(f"unknown field(s): {shown}{more}")
    for field, value in record.items():
        if type(value) in _JSON_TYPE_NAMES:
            raise InvalidEvent(f"field {field!r} must be a string, number or boolean, got "
                               f"{_JSON_TYPE_NAMES[type(value)]}")
    for field in TIME_FIELDS:
        record[field] = to_epoch_ms(record.get(field), field)
    return parse_event(record)


def encode_checked(event: InventoryEvent, encode: Callable[[InventoryEvent], bytes]) -> bytes:
    """The payload that would be published, refused if the codec cannot encode the event
    or the record exceeds the codec's MAX_RECORD_BYTES (every consumer would dead-letter
    it)."""
    try:
        payload = encode(event)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidEvent(f"cannot be encoded as Avro: {shorten(str(exc), 120)}",
                           "invalid_field") from None
    if len(payload) > MAX_RECORD_BYTES:
        raise InvalidEvent(f"encoded record is {len(payload):,} bytes, over the maximum of "
                           f"{MAX_RECORD_BYTES:,}", "too_large")
    return payload


@dataclass(frozen=True)
class RawLine:
    """A line's first :data:`MAX_LINE_BYTES` bytes (newline removed) and its full length."""

    number: int
    data: bytes
    length: int


def raw_lines(stream: BinaryIO) -> Iterator[RawLine]:
    """Split a byte stream on newlines without ever holding more than
    :data:`MAX_LINE_BYTES` of one line in memory."""
    number = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        if chunk.endswith(b"\n"):
            data = chunk[:-1]
            yield RawLine(number, data, len(data))
            continue
        length = len(chunk)
        while length > MAX_LINE_BYTES:
            rest = stream.readline(MAX_LINE_BYTES)
            if not rest:
                break
            if rest.endswith(b"\n"):
                length += len(rest) - 1
                break
            length += len(rest)
        yield RawLine(number, chunk[:MAX_LINE_BYTES], length)


def decode_line(line: RawLine) -> str:
    """The line as text, or :class:`InvalidEvent` naming the first bad byte."""
    if line.length > MAX_LINE_BYTES:
        raise InvalidEvent(f"line is {line.length:,} bytes long, over the maximum of "
                           f"{MAX_LINE_BYTES:,} bytes", "too_large")
    data = line.data
    if line.number == 1 and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.end]
        raise InvalidEvent(f"not valid UTF-8 at byte {exc.start + 1} of the line "
                           f"({shorten(bad, 20)}: {exc.reason})", "undecodable") from None


@dataclass(frozen=True)
class GoodLine:
    line_number: int
    event: InventoryEvent
    payload: bytes


@dataclass(frozen=True)
class BadLine:
    line_number: int
    reason: str
    code: str = "invalid_field"


def check_line(line: RawLine, encode: Callable[[InventoryEvent], bytes]
               ) -> GoodLine | BadLine | None:
    """Everything that can be known about a line before publishing it; None for a blank
    line."""
    try:
        text = decode_line(line)
        if not text.strip():
            return None
        event = parse_json_event(text)
        return GoodLine(line.number, event, encode_checked(event, encode))
    except InvalidEvent as exc:
        return BadLine(line.number, str(exc), exc.code)


def read_event_file(stream: BinaryIO, encode: Callable[[InventoryEvent], bytes]
                    ) -> Iterator[GoodLine | BadLine]:
    """Each non-blank line of ``stream`` as the payload to publish, or as a BadLine
    naming its line number and reason."""
    for line in raw_lines(stream):
        checked = check_line(line, encode)
        if checked is not None:
            yield checked
