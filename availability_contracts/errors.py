"""The one root of the errors the project raises on purpose, and the dead-letter codes.

Every deliberate failure is an :class:`AvailabilityError` whose ``code`` is short,
stable and machine-readable: dead letters carry it in ``reason_code``, metrics use it
as a label, scripts can match on it. ``str()`` is the sentence for people.
"""

from __future__ import annotations


class AvailabilityError(Exception):
    """Root of the project's errors; subclasses set ``code``, an instance may refine it."""

    code: str = "error"

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidEvent(AvailabilityError, ValueError):
    """An input record that must go to the dead-letter topic; ``code`` is one of
    :data:`REASON_CODES`."""

    code = "invalid_field"


REASON_CODES = (
    "undecodable",      # not an Avro record of the contract, or an empty value
    "trailing_bytes",   # bytes left after the Avro record
    "too_large",        # record bigger than the documented maximum
    "unknown_schema",   # registry framing names a schema id the registry cannot give
    "unknown_type",     # event_type is not one of the ten
    "missing_field",    # a field the event type requires is absent
    "invalid_field",    # wrong type, empty string, out-of-range time
    "too_long",         # an id or text over its maximum length
    "id_delimiter",     # an id contains the key delimiter
    "quantity",         # wrong sign for the type, or over the per-event maximum
    "future_event",     # occurred_at too far ahead of the engine clock
    "too_late",         # beyond a horizon: can no longer be applied exactly once
)
"""Every dead-letter reason code, in documentation order."""


def shorten(value: object, limit: int = 64) -> str:
    """``repr`` of a value for an error message, cut to ``limit`` characters: reasons
    must stay readable however large the bad input is."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (over sys.int_info's digit limit)
        return f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else "?"
    if len(text) <= limit:
        return text
    length = len(value) if isinstance(value, (str, bytes)) else len(text)
    return f"{text[:limit]}... ({length} long)"
