"""Canonical events as JSON lines: the format of `availability produce --file`.

Same field names as the Avro contract; ``occurred_at``/``expires_at`` may be epoch
milliseconds or ISO-8601 (a time without an offset is read as UTC).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dataflows.domain.events import InvalidEvent, InventoryEvent, parse_event

TIME_FIELDS = ("occurred_at", "expires_at")
KNOWN_FIELDS = frozenset(
    {"event_id", "event_type", "occurred_at", "source", "sku", "location_id", "quantity",
     "reason", "transfer_id", "counterparty_location_id", "reservation_id", "channel",
     "expires_at", "restockable"}
)


def to_epoch_ms(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidEvent(f"{field} must be epoch milliseconds or ISO-8601, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent(f"{field} is not ISO-8601 or epoch ms: {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    raise InvalidEvent(f"{field} must be epoch milliseconds or ISO-8601, got {value!r}")


def parse_json_event(text: str) -> InventoryEvent:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict):
        raise InvalidEvent("a line must be a JSON object")
    unknown = sorted(set(record) - KNOWN_FIELDS)
    if unknown:
        raise InvalidEvent(f"unknown field(s): {', '.join(unknown)}")
    for field in TIME_FIELDS:
        record[field] = to_epoch_ms(record.get(field), field)
    return parse_event(record)


@dataclass(frozen=True)
class BadLine:
    line_number: int
    reason: str


def read_event_file(path: Path) -> Iterator[InventoryEvent | BadLine]:
    """Yield each non-blank line's event, or a BadLine naming its line number and reason."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield parse_json_event(line)
            except InvalidEvent as exc:
                yield BadLine(number, str(exc))
