"""Request limits and checks shared by the servicer and the client.

Ids are joined with ``|`` into store and Kafka keys, so an id containing it could
read another key: such ids are refused, like empty ones, before any lookup. Error texts
quote what the client sent through :func:`quoted`, so a 100 KB id cannot make a 100 KB
status message.
"""

from __future__ import annotations

from collections.abc import Sequence

from availability_contracts.errors import AvailabilityError
from availability_contracts.keys import KEY_DELIMITER

MAX_SKUS = 1000
MAX_LOCATION_IDS = 1000
QUOTE_LIMIT = 64


class InvalidRequest(AvailabilityError, ValueError):
    """A request the API refuses with INVALID_ARGUMENT; the text is the client's message."""

    code = "invalid_request"


def quoted(value: str, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error text; beyond ``limit`` characters a prefix, ``…`` and
    the full length."""
    if len(value) <= limit:
        return repr(value)
    head = repr(value[:limit])
    return f"{head[:-1]}…{head[-1]} ({len(value)} characters)"


def check_id(field: str, value: str) -> str:
    """``value`` when it is a usable id, else :class:`InvalidRequest` naming ``field``."""
    if not value:
        raise InvalidRequest(f"{field} is required (got an empty string)")
    if KEY_DELIMITER in value:
        raise InvalidRequest(
            f"{field} {quoted(value)} contains {KEY_DELIMITER!r}, the key delimiter")
    return value


def check_ids(field: str, values: Sequence[str], limit: int, *, required: bool) -> None:
    """Check a list of ids: count within ``limit`` and every id usable."""
    if not values:
        if required:
            raise InvalidRequest(f"{field} is empty: give 1 to {limit}")
        return
    if len(values) > limit:
        raise InvalidRequest(
            f"too many {field}: {len(values)} in one request, at most {limit} "
            "(AvailabilityClient splits larger lists into several calls)"
        )
    # one C-level scan for the common, valid case; find the culprit only on failure
    if all(values) and KEY_DELIMITER not in "".join(values):
        return
    for index, value in enumerate(values):
        check_id(f"{field}[{index}]", value)


def check_location(location_id: str, per_location: bool, channel: str) -> None:
    """A per-location channel needs a location_id; a pooled one has none to give."""
    if per_location:
        if not location_id:
            raise InvalidRequest(
                f"channel {quoted(channel)} is per-location (one number per store): "
                "location_id is required"
            )
        check_id("location_id", location_id)
    elif location_id:
        raise InvalidRequest(
            f"channel {quoted(channel)} is pooled (one number over its locations): "
            f"omit location_id (got {quoted(location_id)})"
        )
