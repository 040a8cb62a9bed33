"""Kafka keys of the snapshot topics: UTF-8 strings joined with ``|``, which no id may
contain. The one place keys are built and split."""

from __future__ import annotations

KEY_DELIMITER = "|"


def position_key(sku: str, location_id: str) -> str:
    """``sku|location_id``: a position on ``availability.positions``."""
    return f"{sku}{KEY_DELIMITER}{location_id}"


def channel_key(channel: str, sku: str, location_id: str | None = None) -> str:
    """``channel|sku`` for a pooled number, ``channel|sku|location_id`` for a per-location
    channel; an empty ``location_id`` counts as none (as in the gRPC requests)."""
    if not location_id:
        return f"{channel}{KEY_DELIMITER}{sku}"
    return f"{channel}{KEY_DELIMITER}{sku}{KEY_DELIMITER}{location_id}"


def split_key(key: str) -> list[str]:
    """The parts of a key: [sku, location] or [channel, sku] or [channel, sku, location]."""
    return key.split(KEY_DELIMITER)
