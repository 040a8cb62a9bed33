"""Request limits and checks shared by the servicer and the client.

Ids are joined with ``|`` into store and Kafka keys, so an id containing it could
read another key: such ids are refused, like empty ones, before any lookup.
"""

from __future__ import annotations

from collections.abc import Sequence

DELIMITER = "|"
MAX_SKUS = 1000
MAX_LOCATION_IDS = 1000


class InvalidRequest(ValueError):
    """A request the API refuses with INVALID_ARGUMENT; the text is the client's message."""


def check_id(field: str, value: str) -> str:
    """``value`` when it is a usable id, else :class:`InvalidRequest` naming ``field``."""
    if not value:
        raise InvalidRequest(f"{field} is required (got an empty string)")
    if DELIMITER in value:
        raise InvalidRequest(f"{field} {value!r} contains {DELIMITER!r}, the key delimiter")
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
    if all(values) and DELIMITER not in "".join(values):
        return
    for index, value in enumerate(values):
        check_id(f"{field}[{index}]", value)


def check_location(location_id: str, per_location: bool, channel: str) -> None:
    """A per-location channel needs a location_id; a pooled one has none to give."""
    if per_location:
        if not location_id:
            raise InvalidRequest(
                f"channel {channel!r} is per-location (one number per store): "
                "location_id is required"
            )
        check_id("location_id", location_id)
    elif location_id:
        raise InvalidRequest(
            f"channel {channel!r} is pooled (one number over its locations): "
            f"omit location_id (got {location_id!r})"
        )
