"""The one Avro codec every producer and consumer of the project uses.

Plain Avro (schemaless body) by default. When a schema registry URL is configured,
payloads use the Confluent wire format: magic byte 0, 4-byte big-endian schema id,
Avro body; schemas are registered under the TopicNameStrategy subject
``<topic>-value`` and writer schemas are fetched by id on read, so a consumer can read
events written with a newer, compatible schema.

Timestamps travel as ``timestamp-millis`` but are handled as plain int milliseconds
in the engine: the reader schema drops the logical types, which saves the datetime
conversion on the hot path (about 1.2 us per event).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, cast

import fastavro

from availability_contracts import avro_writer
from availability_contracts.avro_reader import read_inventory_event
from availability_contracts.errors import AvailabilityError, InvalidEvent, shorten
from availability_contracts.schemas import (
    CHANNEL_SCHEMA,
    EVENT_SCHEMA,
    POSITION_SCHEMA,
    parsed_schema,
    schema_text,
    strip_logical_types,
)

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
    POSITION_SCHEMA: avro_writer.position_record,
    CHANNEL_SCHEMA: avro_writer.channel_record,
}


class RegistryError(AvailabilityError, RuntimeError):
    """The schema registry could not be reached or refused a request."""

    code = "registry"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """HTTP status of the answer; None when there was no answer at all."""

    @property
    def retryable(self) -> bool:
        """Anything but "not found" or "schema refused" may succeed later: no answer, a
        server error, throttling, or credentials being fixed (401/403)."""
        return self.status not in (404, 409, 415, 422)


class RegistryRetries:
    """Backoff for an unreachable registry: a record is never dead-lettered, nor lost,
    because the registry is down; the step waits and tries again."""

    def __init__(self, first_s: float = 0.2, max_s: float = 10.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.on_retry: list[Any] = []
        """Callables given (error, attempt) before each wait: metrics and logs hook in."""
        self.on_success: list[Any] = []
        """Callables run when a request succeeds after retries."""

    def call(self, action: Any) -> Any:
        delay = self.first_s
        attempt = 0
        while True:
            try:
                result = action()
                if attempt:
                    for hook in self.on_success:
                        hook()
                return result
            except RegistryError as exc:
                if not exc.retryable:
                    raise
                attempt += 1
                for hook in self.on_retry:
                    hook(exc, attempt)
                time.sleep(delay)
                delay = min(self.max_s, delay * 2)


def mask_url(url: str) -> str:
    """``https://user:secret@host`` -> ``https://user:***@host``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class SchemaRegistry:
    """Minimal Confluent Schema Registry REST client (register by subject, fetch by id)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.shown_url = mask_url(self.url)
        """The URL for messages and logs: a password in it is never shown."""
        self.timeout = timeout
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Any] = {}

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise RegistryError(f"{method} {self.shown_url}{path}: HTTP {exc.code}: {detail}",
                                exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(f"{method} {self.shown_url}{path}: {exc}") from None

    def register(self, subject: str, schema: str) -> int:
        key = (subject, schema)
        if key not in self._ids:
            answer = self._request("POST", f"/subjects/{subject}/versions", {"schema": schema})
            self._ids[key] = int(answer["id"])
        return self._ids[key]

    def writer_schema(self, schema_id: int) -> Any:
        """The parsed Avro schema of ``schema_id``; a schema that is not Avro (Protobuf,
        JSON Schema) or does not parse is refused like an unknown id."""
        if schema_id not in self._schemas:
            answer = self._request("GET", f"/schemas/ids/{schema_id}")
            kind = answer.get("schemaType", "AVRO") if isinstance(answer, dict) else None
            if kind != "AVRO":
                raise RegistryError(f"schema id {schema_id} is a {shorten(kind)} schema, "
                                    "not Avro", 415)
            try:
                parsed = json.loads(answer["schema"])
                self._schemas[schema_id] = fastavro.parse_schema(strip_logical_types(parsed))
            except Exception as exc:
                raise RegistryError(f"schema id {schema_id} does not parse as Avro: "
                                    f"{type(exc).__name__}: {shorten(str(exc), 120)}",
                                    415) from None
        return self._schemas[schema_id]


class Codec:
    """Encodes and decodes the project's Avro contracts, plain or registry-framed."""

    def __init__(self, registry_url: str | None = None,
                 retries: RegistryRetries | None = None) -> None:
        self.registry = SchemaRegistry(registry_url) if registry_url else None
        self.retries = retries or RegistryRetries()
        self._own_event_ids: set[int] = set()
        """Registry ids whose schema is exactly our InventoryEvent: read strictly."""

    def encode(self, schema: str, record: Mapping[str, Any] | tuple[Any, ...], topic: str
               ) -> bytes:
        """``record`` is a field mapping; for the snapshot schemas it may also be the
        snapshot tuple itself (fields in schema order), which skips building a dict."""
        header = b""
        registry = self.registry
        if registry is not None:
            subject = f"{topic}-value"
            schema_id = self.retries.call(lambda: registry.register(subject, schema_text(schema)))
            header = _HEADER.pack(_MAGIC, schema_id)
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

    def _read_event(self, data: bytes) -> dict[str, Any]:
        """Our own contract goes through the strict reader; a registry writer schema
        other than ours (a newer, compatible one) through fastavro's schema resolution."""
        start = 0
        if self.registry is not None:
            if len(data) < _HEADER.size or data[0] != _MAGIC:
                raise InvalidEvent("payload lacks the schema-registry header (magic byte 0)",
                                   "undecodable")
            _, schema_id = _HEADER.unpack_from(data)
            if schema_id not in self._own_event_ids:
                return self.decode(EVENT_SCHEMA, data)
            start = _HEADER.size
        try:
            record, end = read_inventory_event(data, start)
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
