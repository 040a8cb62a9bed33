"""The Avro contracts of schemas/avro, loaded once: their text, parsed form, field names.

The .avsc files are the single source of every field list: the hand-written readers and
writers, the domain's snapshot tuples and the read side's frames all follow them, and
tests check each against these.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import fastavro

EVENT_SCHEMA = "InventoryEvent"
POSITION_SCHEMA = "PositionAvailability"
CHANNEL_SCHEMA = "ChannelAvailability"
DEAD_LETTER_SCHEMA = "DeadLetter"


def strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [strip_logical_types(v) for v in node]
    return node


@cache
def schema_text(name: str) -> str:
    """The .avsc text of a contract, from the installed ``schemas/avro`` folder."""
    return (_schema_folder() / f"{name}.avsc").read_text(encoding="utf-8")


def _schema_folder() -> Traversable:
    """``schemas/avro`` of the checkout; in an installed wheel, the same files shipped as
    the package data ``availability_contracts.avro``."""
    checkout = Path(__file__).resolve().parents[1] / "schemas" / "avro"
    if checkout.is_dir():
        return checkout
    return resources.files("availability_contracts.avro")


@cache
def parsed_schema(name: str) -> Any:
    """The reader schema: timestamps stay int milliseconds (no datetime conversion on
    the hot path)."""
    return fastavro.parse_schema(strip_logical_types(json.loads(schema_text(name))))


@cache
def field_names(name: str) -> tuple[str, ...]:
    """The record's field names in wire order."""
    return tuple(field["name"] for field in json.loads(schema_text(name))["fields"])


@cache
def event_types() -> tuple[str, ...]:
    """The symbols of InventoryEvent's ``event_type`` enum, in index order."""
    fields = json.loads(schema_text(EVENT_SCHEMA))["fields"]
    return tuple(next(f for f in fields if f["name"] == "event_type")["type"]["symbols"])
