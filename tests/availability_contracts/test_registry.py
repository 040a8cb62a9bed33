"""The schema registry client: register and fetch, compatibility, basic auth, TLS, and
no secret in any message. Runs against a real registry when
``AVAILABILITY_TEST_REGISTRY`` (and ``..._AUTH``) name one, else against the stand-in
of ``registry_server.py`` (the TLS and redirect cases always use the stand-in)."""

from __future__ import annotations

import io
import json
import pickle
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastavro
import pytest

from availability_contracts.codec import Codec
from availability_contracts.registry import (
    IncompatibleSchema,
    RegistryError,
    RegistryRetries,
    RegistrySettings,
    RegistrySettingsError,
    SchemaRegistry,
    mask_url,
    record_full_name,
    register_contracts,
)
from availability_contracts.schemas import (
    CHANNEL_SCHEMA,
    EVENT_SCHEMA,
    POSITION_SCHEMA,
    parsed_schema,
    schema_text,
)
from availability_contracts.topics import TopicNames
from availability_domain.events import EventType, InventoryEvent, decode_event

from .registry_server import (
    ExternalRegistry,
    RegistryServer,
    make_pki,
    open_auth_registry,
    open_registry,
    set_compatibility,
)

SECRET = "s3cr3t-Pa55:w/rd"
"""A password with characters that need quoting in a URL."""

EVENT = InventoryEvent(
    event_id="e-1", event_type=EventType.RECEIPT, occurred_at=1_700_000_000_123,
    source="erp", sku="SKU-1", location_id="DC1", quantity=2)


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer | ExternalRegistry]:
    with open_registry() as found:
        yield found


@pytest.fixture
def names() -> TopicNames:
    prefix = f"reg-{uuid.uuid4().hex[:10]}"
    return TopicNames(f"{prefix}.events", f"{prefix}.dlq", f"{prefix}.positions",
                      f"{prefix}.channels")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("registry-pki"))


def without_field(schema: str, field: str) -> str:
    parsed = json.loads(schema_text(schema))
    parsed["fields"] = [f for f in parsed["fields"] if f["name"] != field]
    return json.dumps(parsed)


def with_field(schema: str, field: dict[str, Any]) -> str:
    parsed = json.loads(schema_text(schema))
    parsed["fields"].append(field)
    return json.dumps(parsed)


# --- register and fetch ---------------------------------------------------------------


def test_register_contracts_is_idempotent_and_ids_fetch_the_schemas(
        registry: RegistryServer | ExternalRegistry, names: TopicNames) -> None:
    first = register_contracts(SchemaRegistry(registry.url), names)
    assert [(r.schema, r.subject) for r in first] == [
        ("InventoryEvent", f"{names.events}-value"), ("DeadLetter", f"{names.dlq}-value"),
        ("PositionAvailability", f"{names.positions}-value"),
        ("ChannelAvailability", f"{names.channels}-value")]
    assert len({r.schema_id for r in first}) == 4
    again = register_contracts(SchemaRegistry(registry.url), names)  # a fresh client
    assert [r.schema_id for r in again] == [r.schema_id for r in first]

    reader = SchemaRegistry(registry.url)
    for done in first:
        assert reader.writer_schema(done.schema_id) == parsed_schema(done.schema)
        assert reader.lookup(done.subject, schema_text(done.schema)) == done.schema_id
    assert reader.lookup(f"{names.events}-nope", schema_text(EVENT_SCHEMA)) is None
    with pytest.raises(RegistryError) as unknown:
        reader.writer_schema(2_000_000_000)
    assert unknown.value.status == 404 and not unknown.value.retryable


def test_codec_frames_with_the_registered_id(registry: RegistryServer | ExternalRegistry,
                                             names: TopicNames) -> None:
    [done] = register_contracts(SchemaRegistry(registry.url), names, [EVENT_SCHEMA])
    data = Codec(registry.url).encode_event(EVENT, names.events)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == done.schema_id
    assert decode_event(Codec(registry.url), data) == EVENT
    with pytest.raises(Exception, match="schema-registry header"):
        decode_event(Codec(registry.url), Codec().encode_event(EVENT, names.events))


def test_subject_strategies(registry: RegistryServer | ExternalRegistry,
                            names: TopicNames) -> None:
    full = record_full_name(POSITION_SCHEMA)
    assert full.endswith(".PositionAvailability") and "." in full.removesuffix(
        ".PositionAvailability")
    topic = RegistrySettings(registry.url)
    record = RegistrySettings(registry.url, subject_strategy="record")
    both = RegistrySettings(registry.url, subject_strategy="topic_record")
    assert topic.subject("t", POSITION_SCHEMA) == "t-value"
    assert record.subject("t", POSITION_SCHEMA) == full
    assert both.subject("t", POSITION_SCHEMA) == f"t-{full}"
    codec = Codec(both)
    data = codec.encode(CHANNEL_SCHEMA, {
        "channel": "web", "sku": "S", "location_id": None, "ats": 3, "as_of": 5,
        "version": 1, "computed_at": 6, "locations": []}, names.channels)
    client = SchemaRegistry(registry.url)
    assert client.lookup(f"{names.channels}-{record_full_name(CHANNEL_SCHEMA)}",
                         schema_text(CHANNEL_SCHEMA)) == int.from_bytes(data[1:5], "big")
    assert client.lookup(f"{names.channels}-value", schema_text(CHANNEL_SCHEMA)) is None


# --- compatibility ---------------------------------------------------------------------


def test_an_incompatible_schema_is_refused_before_registering(
        registry: RegistryServer | ExternalRegistry, names: TopicNames) -> None:
    subject = f"{names.positions}-value"
    set_compatibility(registry, subject, "BACKWARD")
    older = SchemaRegistry(registry.url)
    older.register(subject, without_field(POSITION_SCHEMA, "computed_at"))
    # ours adds computed_at without a default: it cannot read what the older one wrote
    retries = RegistryRetries(first_s=0.01)
    attempts: list[int] = []
    retries.on_retry.append(lambda error, attempt: attempts.append(attempt))
    codec = Codec(registry.url, retries)
    position = {"sku": "S", "location_id": "L", "on_hand": 1, "unsellable": 0, "reserved": 0,
                "in_transit": 0, "safety_stock": 0, "ats": 1, "as_of": 5, "version": 7,
                "computed_at": 9}
    with pytest.raises(IncompatibleSchema) as refused:
        codec.encode(POSITION_SCHEMA, position, names.positions)
    message = str(refused.value)
    assert f"subject {subject!r}" in message and "PositionAvailability" in message
    assert "incompatible" in message and "computed_at" in message, message
    assert "BACKWARD" in message
    assert refused.value.code == "incompatible_schema" and not refused.value.retryable
    assert attempts == [], "an incompatible schema must not be retried"
    assert older.lookup(subject, schema_text(POSITION_SCHEMA)) is None, "registered anyway"
    with pytest.raises(IncompatibleSchema):
        register_contracts(SchemaRegistry(registry.url), names, [POSITION_SCHEMA])

    # An optional field with a default is a compatible change: registered, new id.
    newer = with_field(POSITION_SCHEMA, {"name": "note", "type": ["null", "string"],
                                         "default": None})
    client = SchemaRegistry(registry.url)
    client.register(subject, without_field(POSITION_SCHEMA, "computed_at"))
    assert client.compatibility(subject, newer) is not None  # computed_at still missing
    set_compatibility(registry, subject, "NONE")
    assert client.compatibility(subject, schema_text(POSITION_SCHEMA)) is None
    assert client.register(subject, schema_text(POSITION_SCHEMA)) > 0


def test_a_newer_compatible_writer_is_read_by_the_older_reader(
        registry: RegistryServer | ExternalRegistry, names: TopicNames) -> None:
    subject = f"{names.events}-value"
    writer = SchemaRegistry(registry.url)
    ours = writer.register(subject, schema_text(EVENT_SCHEMA))
    newer_text = with_field(EVENT_SCHEMA, {"name": "loyalty_tier",
                                           "type": ["null", "string"], "default": None})
    assert writer.compatibility(subject, newer_text) is None
    newer_id = writer.register(subject, newer_text)
    assert newer_id != ours
    buffer = io.BytesIO(b"\x00" + newer_id.to_bytes(4, "big"))
    buffer.seek(5)
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(json.loads(newer_text)),
                               {**EVENT.to_record(), "loyalty_tier": "gold"})
    assert decode_event(Codec(registry.url), buffer.getvalue()) == EVENT


# --- basic auth --------------------------------------------------------------------


def test_basic_auth_refused_without_the_password_and_accepted_with_it(
        names: TopicNames) -> None:
    with open_auth_registry("svc-availability", SECRET) as (url_with_credentials, _):
        settings = RegistrySettings(url_with_credentials)
        assert settings.user is not None and settings.password is not None
        plain_url = settings.url
        assert "@" not in plain_url and SECRET not in repr(settings)

        for wrong in (RegistrySettings(plain_url),
                      RegistrySettings(plain_url, user=settings.user, password="nope")):
            client = SchemaRegistry(wrong)
            with pytest.raises(RegistryError) as refused:
                client.register(f"{names.events}-value", schema_text(EVENT_SCHEMA))
            assert refused.value.status == 401, refused.value
            assert refused.value.retryable  # credentials may be fixed while it waits
            assert "user and password" in str(refused.value)
            assert "nope" not in str(refused.value)

        for good in (settings, RegistrySettings(plain_url, user=settings.user,
                                                password=settings.password)):
            done = register_contracts(SchemaRegistry(good), names)
            assert len(done) == 4
        codec = Codec(url_with_credentials)
        data = codec.encode_event(EVENT, names.events)
        assert decode_event(Codec(settings), data) == EVENT


def test_basic_auth_header_and_url_quoting() -> None:
    with RegistryServer(users={"svc": SECRET}) as server:
        quoted = server.url.replace("://", "://svc:s3cr3t-Pa55%3Aw%2Frd@")
        client = SchemaRegistry(quoted)
        assert client.settings.password == SECRET
        client.register("x-value", schema_text(EVENT_SCHEMA))
        assert server.requests[-1][3] == "svc"
        assert all(SECRET not in text for text in (client.shown_url, repr(client),
                                                   repr(client.settings)))
        assert client.shown_url == server.url.replace("://", "://svc:***@")


def test_no_secret_in_any_message() -> None:
    with RegistryServer(users={"svc": SECRET}) as server:
        server.down.set()
        settings = RegistrySettings(server.url, user="svc", password=SECRET)
        client = SchemaRegistry(settings)
        texts = [repr(settings), repr(client), client.shown_url, str(settings)]
        for action in (lambda: client.register("x-value", schema_text(EVENT_SCHEMA)),
                       lambda: client.writer_schema(1)):
            with pytest.raises(RegistryError) as failed:
                action()
            texts.append(str(failed.value))
        wrong = SchemaRegistry(RegistrySettings(server.url, user="svc", password=SECRET + "x"))
        server.down.clear()
        with pytest.raises(RegistryError) as refused:
            wrong.register("x-value", schema_text(EVENT_SCHEMA))
        texts.append(str(refused.value))
        dead = SchemaRegistry(f"http://svc:{SECRET.replace(':', '%3A').replace('/', '%2F')}"
                              "@127.0.0.1:9/")
        with pytest.raises(RegistryError) as unreachable:
            dead.writer_schema(1)
        texts.append(str(unreachable.value))
        pickled = pickle.loads(pickle.dumps(settings))
        assert pickled == settings and pickled.password == SECRET
    for text in texts:
        assert SECRET not in text and "Pa55" not in text, text


def test_mask_url() -> None:
    assert mask_url("https://user:secret@host:8081/x") == "https://user:***@host:8081/x"
    assert mask_url("https://host:8081") == "https://host:8081"
    assert mask_url("http://user@host") == "http://user@host"


# --- settings ----------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"url": "ftp://host"}, "not an http:// or https:// URL"),
    ({"url": f"https://svc:{SECRET}@host:8081"}, "percent-encode a password"),
    ({"url": "https://svc:pa?ss@host"}, "percent-encode a password"),
    ({"url": "https://svc:pa#ss@host"}, "percent-encode a password"),
    ({"url": "https://host:80x1"}, "does not parse"),
    ({"url": "https://host/?x=1"}, "has a query"),
    ({"url": "http://u:p@host", "user": "u", "password": "p"}, "both in the URL"),
    ({"url": "https://host", "user": "u"}, "both a user and a password"),
    ({"url": "https://host", "user": "a:b", "password": "p"}, "cannot contain ':'"),
    ({"url": "http://host", "ca_file": Path("ca.pem")}, "use https://"),
    ({"url": "https://host", "key_file": Path("k.pem")}, "needs its certificate"),
    ({"url": "https://host", "timeout_s": 0}, "must be positive"),
    ({"url": "https://host", "subject_strategy": "whatever"}, "unknown subject strategy"),
])
def test_settings_that_cannot_work_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistrySettingsError, match=message) as refused:
        RegistrySettings(**kwargs)
    assert "p@" not in str(refused.value)
    assert "Pa55" not in str(refused.value) and "ss@" not in str(refused.value)


def test_tls_files_that_do_not_load_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(RegistrySettingsError, match=r"missing-ca.pem"):
        RegistrySettings("https://host", ca_file=missing).ssl_context()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(RegistrySettingsError, match=r"client certificate .*junk.pem"):
        RegistrySettings("https://host", cert_file=junk).ssl_context()


# --- TLS (stand-in) ------------------------------------------------------------------


def test_tls_verifies_the_server_against_the_given_ca(pki: Any) -> None:
    with RegistryServer(tls=(pki.server_cert, pki.server_key)) as server:
        assert server.url.startswith("https://")
        trusted = SchemaRegistry(RegistrySettings(server.url, ca_file=pki.ca))
        schema_id = trusted.register("t-value", schema_text(EVENT_SCHEMA))
        assert trusted.writer_schema(schema_id) == parsed_schema(EVENT_SCHEMA)
        for untrusted in (RegistrySettings(server.url),
                          RegistrySettings(server.url, ca_file=pki.rogue_ca)):
            with pytest.raises(RegistryError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                SchemaRegistry(untrusted).writer_schema(schema_id)
        with pytest.raises(RegistryError):  # plain HTTP to a TLS port
            SchemaRegistry(server.url.replace("https", "http")).writer_schema(schema_id)


def test_mutual_tls_needs_the_client_certificate(pki: Any) -> None:
    with RegistryServer(tls=(pki.server_cert, pki.server_key), client_ca=pki.ca,
                        users={"svc": SECRET}) as server:
        without = SchemaRegistry(RegistrySettings(server.url, ca_file=pki.ca, user="svc",
                                                  password=SECRET))
        with pytest.raises(RegistryError):
            without.writer_schema(1)
        with_cert = SchemaRegistry(RegistrySettings(
            server.url, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key,
            user="svc", password=SECRET))
        assert with_cert.register("t-value", schema_text(EVENT_SCHEMA)) == 1


# --- redirects and timeouts -----------------------------------------------------------


class _Redirecting(BaseHTTPRequestHandler):
    target = ""

    def _redirect(self) -> None:
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _redirect

    def log_message(self, *args: Any) -> None:
        pass


def test_a_redirect_is_refused_so_credentials_never_travel_on() -> None:
    with RegistryServer() as elsewhere:
        _Redirecting.target = elsewhere.url
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            client = SchemaRegistry(RegistrySettings(
                f"http://127.0.0.1:{server.server_address[1]}", user="svc", password=SECRET))
            with pytest.raises(RegistryError, match=r"redirect to .* refused") as refused:
                client.writer_schema(1)
            assert refused.value.status == 307
        finally:
            server.shutdown()
            server.server_close()
        assert elsewhere.requests == [], "the redirect was followed"


def test_timeout_is_a_retryable_error() -> None:
    class Silent(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            threading.Event().wait(2)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = SchemaRegistry(RegistrySettings(
            f"http://127.0.0.1:{server.server_address[1]}", timeout_s=0.2))
        with pytest.raises(RegistryError, match="timed out") as slow:
            client.writer_schema(1)
        assert slow.value.status is None and slow.value.retryable
    finally:
        server.shutdown()
        server.server_close()
