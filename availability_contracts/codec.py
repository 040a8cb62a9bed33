"""The one Avro codec every producer and consumer of the project uses.

Plain Avro (schemaless body) by default. When a schema registry is configured (a URL
or :class:`~availability_contracts.registry.RegistrySettings`: auth, TLS, timeout),
payloads use the Confluent wire format: magic byte 0, 4-byte big-endian schema id,
Avro body; schemas are registered under the TopicNameStrategy subject
``<topic>-value`` (by default) after a compatibility check, and writer schemas are
fetched by id on read, so a consumer can read events written with a newer, compatible
schema. The registry client itself is in :mod:`availability_contracts.registry`.

Timestamps travel as ``timestamp-millis`` but are handled as plain int milliseconds
in the engine: the reader schema drops the logical types, which saves the datetime
conversion on the hot path (about 1.2 us per event).
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Mapping
from typing import Any, cast

import fastavro

from availability_contracts import hot_codec
from availability_contracts.errors import InvalidEvent, shorten
from availability_contracts.registry import (
    IncompatibleSchema,
    RegistryError,
    RegistryRetries,
    RegistrySettings,
    SchemaRegistry,
    mask_url,
)
from availability_contracts.schemas import (
    CHANNEL_SCHEMA,
    EVENT_SCHEMA,
    POSITION_SCHEMA,
    parsed_schema,
    schema_text,
)

__all__ = [
    "DEAD_LETTER_KEY_LIMIT", "DEAD_LETTER_VALUE_LIMIT", "MAX_RECORD_BYTES", "Codec",
    "IncompatibleSchema", "RegistryError", "RegistryRetries", "RegistrySettings",
    "SchemaRegistry", "dead_letter_payload", "mask_url",
]

_MAGIC = 0
_HEADER = struct.Struct(">bI")

MAX_RECORD_BYTES = 65_536
"""Largest inventory event accepted, in bytes on the wire. A real event is a few hundred
bytes; anything this large is a fault upstream, refused before it costs any decoding."""
DEAD_LETTER_VALUE_LIMIT = 262_144
"""Original bytes kept whole in a dead letter up to this size; beyond it only a prefix
is kept, with the full length and SHA-256, so the dead letter stays well under the
producer's message size limit."""
DEAD_LETTER_KEY_LIMIT = 1_024


_FAST_WRITERS = {
    POSITION_SCHEMA: hot_codec.position_record,
    CHANNEL_SCHEMA: hot_codec.channel_record,
}


class Codec:
    """Encodes and decodes the project's Avro contracts, plain or registry-framed."""

    def __init__(self, registry: str | RegistrySettings | None = None,
                 retries: RegistryRetries | None = None) -> None:
        """``registry``: a registry URL or :class:`RegistrySettings` (auth, TLS,
        timeout, subject strategy); None or "" for plain Avro."""
        self.registry = SchemaRegistry(registry) if registry else None
        self.retries = retries or RegistryRetries()
        self._own_event_ids: set[int] = set()
        """Registry ids whose schema is exactly our InventoryEvent: read strictly."""
        self._headers: dict[tuple[str, str], bytes] = {}
        """(schema, topic) -> the wire header of its registered id."""

    def header(self, schema: str, topic: str) -> bytes:
        """What starts every ``schema`` payload on ``topic``: the registry's wire header
        of the schema's id (registered on first use), or nothing for plain Avro."""
        registry = self.registry
        if registry is None:
            return b""
        return self._headers.get((schema, topic)) or self._header(registry, schema, topic)

    def _header(self, registry: SchemaRegistry, schema: str, topic: str) -> bytes:
        """Registers ``schema`` under its subject for ``topic`` (once; a schema new to
        the subject is checked for compatibility first and refused with
        :class:`IncompatibleSchema`); an unreachable registry is waited out."""
        subject = registry.settings.subject(topic, schema)
        schema_id = self.retries.call(
            lambda: registry.register(subject, schema_text(schema), schema))
        header = self._headers[(schema, topic)] = _HEADER.pack(_MAGIC, schema_id)
        return header

    def encode(self, schema: str, record: Mapping[str, Any] | tuple[Any, ...], topic: str
               ) -> bytes:
        """``record`` is a field mapping; for the snapshot schemas it may also be the
        snapshot tuple itself (fields in schema order), which skips building a dict."""
        header = self.header(schema, topic)
        fast = _FAST_WRITERS.get(schema)
        if fast is not None:
            return header + fast(record)
        buffer = io.BytesIO(header)
        buffer.seek(len(header))
        if not isinstance(record, Mapping):
            record = record._asdict()  # type: ignore[attr-defined]
        fastavro.schemaless_writer(buffer, parsed_schema(schema), record)
        return buffer.getvalue()

    def decode(self, schema: str, data: bytes) -> dict[str, Any]:
        """Decode one whole payload; raises :class:`InvalidEvent` (a ValueError) with a
        readable reason and code when it cannot, including when bytes follow the record.

        An unreachable registry is waited out (:class:`RegistryRetries`), never reported
        as a bad payload; an id the registry does not know is one.
        """
        reader = parsed_schema(schema)
        registry = self.registry
        if registry is None:
            writer, start = None, 0
        else:
            if len(data) < _HEADER.size or data[0] != _MAGIC:
                raise InvalidEvent("payload lacks the schema-registry header (magic byte 0)",
                                   "undecodable")
            _, schema_id = _HEADER.unpack_from(data)
            try:
                writer = self.retries.call(lambda: registry.writer_schema(schema_id))
            except RegistryError as exc:
                raise InvalidEvent(f"schema id {schema_id} is unusable: {exc}",
                                   "unknown_schema") from None
            if schema == EVENT_SCHEMA and writer == parsed_schema(EVENT_SCHEMA):
                self._own_event_ids.add(schema_id)
            start = _HEADER.size
        body = io.BytesIO(data)
        body.seek(start)
        try:
            record = fastavro.schemaless_reader(body, writer if writer is not None else reader,
                                                reader if writer is not None else None)
        except Exception as exc:
            raise InvalidEvent(
                f"cannot decode Avro {schema}: {type(exc).__name__}: {shorten(str(exc), 200)}",
                "undecodable",
            ) from None
        left = len(data) - body.tell()
        if left:
            raise InvalidEvent(f"{left} byte(s) follow the Avro {schema} record",
                               "trailing_bytes")
        return cast(dict[str, Any], record)

    def encode_event(self, event: Any, topic: str) -> bytes:
        """An event's field mapping, or an object with ``to_record()`` (the domain's
        InventoryEvent), as an InventoryEvent payload."""
        record = event.to_record() if hasattr(event, "to_record") else event
        return self.encode(EVENT_SCHEMA, record, topic)

    def event_body_start(self, data: bytes | None) -> int | None:
        """Where the strict reader starts on an InventoryEvent payload of our own schema
        (after the registry header, if any), or None when :meth:`decode_event_record`
        would not hand it to that reader (empty, too large, no header, another writer
        schema): where a faster reader of the same contract may start too."""
        if not data or len(data) > MAX_RECORD_BYTES:
            return None
        if self.registry is None:
            return 0
        if len(data) < _HEADER.size or data[0] != _MAGIC:
            return None
        _, schema_id = _HEADER.unpack_from(data)
        return _HEADER.size if schema_id in self._own_event_ids else None

    def _read_event(self, data: bytes) -> dict[str, Any]:
        """Our own contract goes through the strict reader; a registry writer schema
        other than ours (a newer, compatible one) through fastavro's schema resolution."""
        start = self.event_body_start(data)
        if start is None:
            if len(data) < _HEADER.size or data[0] != _MAGIC:
                raise InvalidEvent("payload lacks the schema-registry header (magic byte 0)",
                                   "undecodable")
            return self.decode(EVENT_SCHEMA, data)
        try:
            record, end = hot_codec.read_inventory_event(data, start)
        except InvalidEvent as exc:
            raise InvalidEvent(f"cannot decode Avro {EVENT_SCHEMA}: {exc}", exc.code) from None
        if end != len(data):
            raise InvalidEvent(f"{len(data) - end} byte(s) follow the Avro {EVENT_SCHEMA} "
                               "record", "trailing_bytes")
        return record

    def decode_event_record(self, data: bytes | None) -> dict[str, Any]:
        """An InventoryEvent payload as its field mapping (times as epoch ms); raises
        :class:`InvalidEvent` with the dead-letter reason. The domain's ``parse_event``
        validates the mapping."""
        if not data:
            raise InvalidEvent("empty message value", "undecodable")
        if len(data) > MAX_RECORD_BYTES:
            raise InvalidEvent(f"record of {len(data):,} bytes is over the maximum of "
                               f"{MAX_RECORD_BYTES:,}", "too_large")
        return self._read_event(data)


def dead_letter_payload(key: bytes | None, value: bytes | None) -> dict[str, Any]:
    """The original-record fields of a dead letter, bounded in size.

    A value over :data:`DEAD_LETTER_VALUE_LIMIT` (or a key over its limit) keeps a prefix,
    flagged ``truncated``, with the full length and SHA-256 of the whole original value so
    it can still be matched against the source system's log.
    """
    truncated = False
    if key is not None and len(key) > DEAD_LETTER_KEY_LIMIT:
        key, truncated = key[:DEAD_LETTER_KEY_LIMIT], True
    length = None if value is None else len(value)
    digest = None if value is None else hashlib.sha256(value).hexdigest()
    if value is not None and len(value) > DEAD_LETTER_VALUE_LIMIT:
        value, truncated = value[:DEAD_LETTER_VALUE_LIMIT], True
    return {"original_key": key, "original_value": value, "original_length": length,
            "original_sha256": digest, "truncated": truncated}
