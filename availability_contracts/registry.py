"""The Confluent Schema Registry client: settings, requests, retries, contracts.

Speaks the REST API that Confluent Schema Registry, Karapace, Redpanda and Apicurio
(under ``/apis/ccompat/v7``) share: register a schema under a subject, find the id of
a schema already registered, check a schema against a subject's latest version, and
fetch a writer schema by id. Only the standard library is used (urllib, ssl), so the
contracts layer stays free of network clients.

Credentials never appear in a message, a log line or a ``repr``: they are taken out of
the URL into :class:`RegistrySettings` (the password field is not part of its repr) and
sent as an ``Authorization`` header, which is never repeated to a host a redirect
points at (redirects are refused).
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import fastavro

from availability_contracts.errors import AvailabilityError, shorten
from availability_contracts.schemas import (
    CHANNEL_SCHEMA,
    DEAD_LETTER_SCHEMA,
    EVENT_SCHEMA,
    POSITION_SCHEMA,
    schema_text,
    strip_logical_types,
)
from availability_contracts.topics import TopicNames

T = TypeVar("T")

SUBJECT_STRATEGIES = ("topic", "record", "topic_record")
"""How a subject is named (Confluent's subject name strategies, value side):
``topic`` -> ``<topic>-value`` (TopicNameStrategy, the default), ``record`` -> the
record's full name (RecordNameStrategy), ``topic_record`` -> ``<topic>-<full name>``
(TopicRecordNameStrategy)."""

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ENCODE = ("percent-encode a password in the URL (%2F for /, %3A for :, %3F for ?, %23 for "
           "#, %40 for @), or give it with --schema-registry-password-file")


class RegistryError(AvailabilityError, RuntimeError):
    """The schema registry could not be reached or refused a request."""

    code = "registry"

    def __init__(self, message: str, status: int | None = None,
                 error_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """HTTP status of the answer; None when there was no answer at all."""
        self.error_code = error_code
        """The registry's own ``error_code`` (40401 subject not found, ...), if given."""

    @property
    def retryable(self) -> bool:
        """Anything but "not found" or "schema refused" may succeed later: no answer, a
        server error, throttling, or credentials being fixed (401/403)."""
        return self.status not in (400, 404, 409, 415, 422)


class IncompatibleSchema(RegistryError):
    """A schema the registry's compatibility rules refuse for a subject: a writer
    refuses to register it (and to write anything) rather than fail later."""

    code = "incompatible_schema"

    def __init__(self, subject: str, schema_name: str, reasons: list[str], url: str,
                 level: str | None = None) -> None:
        self.subject = subject
        self.reasons = reasons
        self.level = level
        """The subject's compatibility level, when the registry told it."""
        why = "; ".join(shorten(reason, 300).strip("'\"") for reason in reasons[:5]) or (
            "no reason given")
        under = f" under {level} compatibility" if level else ""
        super().__init__(
            f"schema registry {url} refuses {schema_name} for subject {subject!r}: it is "
            f"incompatible with the subject's latest version{under}: {why} (only "
            "changes the compatibility level allows may be registered: docs/operations.md, "
            "Schema evolution)", 409)


class RegistrySettingsError(AvailabilityError, ValueError):
    """Registry settings that cannot work (a bad URL, a TLS file that does not load)."""

    code = "registry_settings"


def mask_url(url: str) -> str:
    """``https://user:secret@host`` -> ``https://user:***@host``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


@dataclass(frozen=True)
class RegistrySettings:
    """Where the registry is and how to talk to it; picklable (an engine's settings
    travel to its processes), its repr shows no password.

    Credentials in ``url`` (``https://user:password@host``) are moved into ``user`` and
    ``password``; giving them both ways is refused.
    """

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    """PEM bundle of the CA(s) the server's certificate must chain to (default: the
    system's trust store)."""
    cert_file: Path | None = None
    """Client certificate (PEM) for a registry that wants mutual TLS."""
    key_file: Path | None = None
    """Its private key (PEM); may be omitted when ``cert_file`` holds it."""
    timeout_s: float = 10.0
    subject_strategy: str = "topic"

    def __post_init__(self) -> None:
        try:
            parts = urllib.parse.urlsplit(self.url.strip())
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise RegistrySettingsError(f"the schema registry URL does not parse: {_ENCODE}"
                                        ) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistrySettingsError(
                f"the schema registry URL {_origin(parts)} is not an http:// or https:// "
                "URL")
        if "@" in f"{parts.path}{parts.query}{parts.fragment}" or parts.query or parts.fragment:
            # "https://user:pa/ss@host" parses as host "user" and path "/ss@host": the
            # password would be shown as part of the URL. A registry URL has no query.
            raise RegistrySettingsError(
                f"the schema registry URL {_origin(parts)} has a query, a fragment or an '@' "
                f"after its host: {_ENCODE}")
        if parts.username is not None or parts.password is not None:
            if self.user is not None or self.password is not None:
                raise RegistrySettingsError(
                    "schema registry credentials given both in the URL and as options")
            object.__setattr__(self, "user", urllib.parse.unquote(parts.username or ""))
            object.__setattr__(self, "password", urllib.parse.unquote(parts.password or ""))
            parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
        object.__setattr__(self, "url", urllib.parse.urlunsplit(parts).rstrip("/"))
        if (self.user is None) != (self.password is None):
            raise RegistrySettingsError(
                "schema registry basic auth needs both a user and a password")
        if self.user is not None and ":" in self.user:
            raise RegistrySettingsError("a schema registry user name cannot contain ':'")
        if parts.scheme == "http" and (self.ca_file or self.cert_file or self.key_file):
            raise RegistrySettingsError(
                f"TLS options given for the plain-HTTP schema registry URL {self.url}; "
                "use https://")
        if self.key_file is not None and self.cert_file is None:
            raise RegistrySettingsError("a schema registry client key needs its certificate")
        if not self.timeout_s > 0:
            raise RegistrySettingsError("the schema registry timeout must be positive")
        if self.subject_strategy not in SUBJECT_STRATEGIES:
            raise RegistrySettingsError(
                f"unknown subject strategy {self.subject_strategy!r}; one of "
                f"{', '.join(SUBJECT_STRATEGIES)}")

    @classmethod
    def of(cls, value: str | RegistrySettings) -> RegistrySettings:
        return value if isinstance(value, RegistrySettings) else cls(value)

    @property
    def shown_url(self) -> str:
        """The URL for messages: never with a password."""
        if self.user is None:
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        user = urllib.parse.quote(self.user, safe="")
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{parts.netloc}"))

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of an https URL (None for http); a CA or key file that does
        not load is a :class:`RegistrySettingsError` naming the file."""
        if not self.url.startswith("https://"):
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise RegistrySettingsError(
                f"cannot load the schema registry CA {self.ca_file}: {_reason(exc)}") from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file),
                                        str(self.key_file) if self.key_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise RegistrySettingsError(
                    f"cannot load the schema registry client certificate {self.cert_file}"
                    f"{f' / key {self.key_file}' if self.key_file else ''}: "
                    f"{_reason(exc)}") from None
        return context

    def subject(self, topic: str, schema: str) -> str:
        """The subject ``schema`` (a contract name such as ``InventoryEvent``) is
        registered under when written to ``topic``."""
        if self.subject_strategy == "topic":
            return f"{topic}-value"
        name = record_full_name(schema)
        return name if self.subject_strategy == "record" else f"{topic}-{name}"


def _origin(parts: urllib.parse.SplitResult) -> str:
    """scheme://host[:port] of a URL, for messages: nothing that could be a secret."""
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme or '?'}://{host}{port}"


@cache
def record_full_name(schema: str) -> str:
    """``namespace.name`` of a contract's top-level record."""
    parsed = json.loads(schema_text(schema))
    namespace = parsed.get("namespace")
    return f"{namespace}.{parsed['name']}" if namespace else str(parsed["name"])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would repeat the Authorization header to another address: refused."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        raise urllib.error.HTTPError(req.full_url, code,
                                     f"redirect to {mask_url(newurl)} refused", headers, fp)


class RegistryRetries:
    """Backoff for an unreachable registry: a record is never dead-lettered, nor lost,
    because the registry is down; the step waits and tries again."""

    def __init__(self, first_s: float = 0.2, max_s: float = 10.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.on_retry: list[Callable[[RegistryError, int], None]] = []
        """Callables given (error, attempt) before each wait: metrics and logs hook in."""
        self.on_success: list[Callable[[], None]] = []
        """Callables run when a request succeeds after retries."""

    def call(self, action: Callable[[], T]) -> T:
        delay = self.first_s
        attempt = 0
        while True:
            try:
                result = action()
                if attempt:
                    for done in self.on_success:
                        done()
                return result
            except RegistryError as exc:
                if not exc.retryable:
                    raise
                attempt += 1
                for hook in self.on_retry:
                    hook(exc, attempt)
                time.sleep(delay)
                delay = min(self.max_s, delay * 2)


class SchemaRegistry:
    """Minimal Confluent Schema Registry REST client: writers get the id of a schema
    under a subject (registering it after a compatibility check when it is new there),
    readers fetch a writer schema by id. Answers are cached for the process's life."""

    def __init__(self, settings: str | RegistrySettings, timeout: float | None = None) -> None:
        settings = RegistrySettings.of(settings)
        if timeout is not None:
            settings = RegistrySettings(
                settings.url, settings.user, settings.password, settings.ca_file,
                settings.cert_file, settings.key_file, timeout, settings.subject_strategy)
        self.settings = settings
        self.url = settings.url
        self.shown_url = settings.shown_url
        """The URL for messages and logs: a password in it is never shown."""
        self.timeout = settings.timeout_s
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        context = settings.ssl_context()
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)
        self._headers = {"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE}
        if settings.user is not None:
            token = base64.b64encode(f"{settings.user}:{settings.password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"SchemaRegistry({self.shown_url!r})"

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers=self._headers)
        where = f"{method} {self.shown_url}{path}"
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode(errors="replace") if exc.fp is not None else ""
            error_code, detail = _error_detail(raw, exc.reason)
            hint = ""
            if exc.code in (401, 403):
                hint = (" (check the registry user and password)" if exc.code == 401 else
                        " (the registry user may not do this)")
            raise RegistryError(f"{where}: HTTP {exc.code}: {detail}{hint}", exc.code,
                                error_code) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = _reason(reason) if isinstance(reason, BaseException) else str(reason)
            raise RegistryError(f"{where}: {text}") from None
        except (OSError, ValueError) as exc:  # a reset connection, an answer not JSON
            raise RegistryError(f"{where}: {_reason(exc)}") from None

    @staticmethod
    def _subject_path(subject: str) -> str:
        return urllib.parse.quote(subject, safe="")

    def lookup(self, subject: str, schema: str) -> int | None:
        """The id of ``schema`` if it is already registered under ``subject``."""
        try:
            answer = self._request("POST", f"/subjects/{self._subject_path(subject)}",
                                   {"schema": schema})
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise
        return int(answer["id"])

    def compatibility(self, subject: str, schema: str) -> list[str] | None:
        """None when ``schema`` may be registered under ``subject`` (compatible with its
        latest version, or the subject has none yet); else the registry's reasons."""
        try:
            answer = self._request(
                "POST", f"/compatibility/subjects/{self._subject_path(subject)}"
                        "/versions/latest?verbose=true", {"schema": schema})
        except RegistryError as exc:
            if exc.status == 404:  # no such subject or version yet: nothing to break
                return None
            raise
        if not isinstance(answer, dict) or answer.get("is_compatible", True):
            return None
        messages = answer.get("messages") or []
        return [str(message) for message in messages] if isinstance(messages, list) else [
            str(messages)]

    def compatibility_level(self, subject: str) -> str | None:
        """The subject's compatibility level (its own, else the registry's default);
        None when the registry does not say. For messages only: never raises."""
        for path in (f"/config/{self._subject_path(subject)}?defaultToGlobal=true",
                     "/config"):
            try:
                answer = self._request("GET", path)
            except RegistryError:
                continue
            if isinstance(answer, dict):
                level = answer.get("compatibilityLevel") or answer.get("compatibility")
                if level:
                    return str(level)
        return None

    def register(self, subject: str, schema: str, schema_name: str | None = None) -> int:
        """The id of ``schema`` under ``subject``. A schema new to the subject is first
        checked against the subject's latest version: one the registry finds
        incompatible is refused with :class:`IncompatibleSchema` (not retried)."""
        key = (subject, schema)
        if key not in self._ids:
            schema_id = self.lookup(subject, schema)
            if schema_id is None:
                name = schema_name or _schema_name(schema)
                reasons = self.compatibility(subject, schema)
                if reasons is not None:
                    raise IncompatibleSchema(subject, name, reasons, self.shown_url,
                                             self.compatibility_level(subject))
                try:
                    answer = self._request(
                        "POST", f"/subjects/{self._subject_path(subject)}/versions",
                        {"schema": schema})
                except RegistryError as exc:
                    if exc.status == 409:  # a version registered in between refuses it
                        raise IncompatibleSchema(
                            subject, name, [str(exc).split(": HTTP 409: ", 1)[-1]],
                            self.shown_url, self.compatibility_level(subject)) from None
                    raise
                schema_id = int(answer["id"])
            self._ids[key] = schema_id
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


def _schema_name(schema: str) -> str:
    try:
        return str(json.loads(schema)["name"])
    except (ValueError, KeyError, TypeError):
        return "the schema"


def _error_detail(raw: str, fallback: object) -> tuple[int | None, str]:
    """(error_code, message) of a registry error body ``{"error_code", "message"}``."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None, shorten(raw, 300).strip("'\"") if raw.strip() else str(fallback)
    if isinstance(body, dict) and "message" in body:
        code = body.get("error_code")
        return (int(code) if isinstance(code, int) else None,
                shorten(str(body["message"]), 300).strip("'\""))
    return None, shorten(raw, 300).strip("'\"")


CONTRACT_ROLES: tuple[tuple[str, str], ...] = (
    (EVENT_SCHEMA, "events"),
    (DEAD_LETTER_SCHEMA, "dlq"),
    (POSITION_SCHEMA, "positions"),
    (CHANNEL_SCHEMA, "channels"),
)
"""Each contract and the topic (a :class:`TopicNames` field) it is written to."""

ENGINE_WRITES = (DEAD_LETTER_SCHEMA, POSITION_SCHEMA, CHANNEL_SCHEMA)
"""The contracts the engine writes (it only reads InventoryEvent)."""


@dataclass(frozen=True)
class Registered:
    schema: str
    topic: str
    subject: str
    schema_id: int


def register_contracts(registry: SchemaRegistry, topics: TopicNames,
                       schemas: Iterable[str] | None = None,
                       retries: RegistryRetries | None = None) -> list[Registered]:
    """Register the contracts (default: all four) under their subjects for ``topics``,
    each checked for compatibility first; idempotent (an unchanged schema keeps its id).

    Raises :class:`IncompatibleSchema` naming the subject and the registry's reason, or
    :class:`RegistryError` when the registry cannot be reached (after ``retries``, if
    given)."""
    wanted = set(schemas) if schemas is not None else None
    done = []
    for schema, role in CONTRACT_ROLES:
        if wanted is not None and schema not in wanted:
            continue
        topic = getattr(topics, role)
        subject = registry.settings.subject(topic, schema)
        text = schema_text(schema)

        def register(subject: str = subject, text: str = text, schema: str = schema) -> int:
            return registry.register(subject, text, schema)

        schema_id = retries.call(register) if retries is not None else register()
        done.append(Registered(schema, topic, subject, schema_id))
    return done
