"""Schema registries for the tests: a real one when the environment names it, else an
in-process Confluent-compatible stand-in.

``AVAILABILITY_TEST_REGISTRY=http://host:port`` points the registry tests at a real
Confluent-compatible registry (Confluent, Karapace, Redpanda, Apicurio under
``/apis/ccompat/v7``) without authentication, and ``AVAILABILITY_TEST_REGISTRY_AUTH=
http://user:password@host:port`` at one that requires those credentials. No such server
can be installed from the package registries this project may use (see
docs/operations.md, section 4), so by default the tests run against
:class:`RegistryServer`: a thread serving the subset of the Confluent REST API the
project uses, with its status codes, error codes and compatibility rules (BACKWARD
by default; NONE, FORWARD, FULL and their _TRANSITIVE forms per subject), optional
basic auth and TLS (with client certificates).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

EXTERNAL_ENV = "AVAILABILITY_TEST_REGISTRY"
EXTERNAL_AUTH_ENV = "AVAILABILITY_TEST_REGISTRY_AUTH"

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
"""writer type -> the reader types that can read it (Avro schema resolution)."""


def _named(schema: Any, names: dict[str, Any], namespace: str | None = None) -> None:
    """Collect named types (by full and short name) so references can be resolved."""
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, names, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed", "error"):
            space = schema.get("namespace", namespace)
            name = schema["name"]
            full = name if "." in name or not space else f"{space}.{name}"
            names[full] = names[name.rsplit(".", 1)[-1]] = schema
            for item in schema.get("fields", []):
                _named(item["type"], names, space)
        elif kind == "array":
            _named(schema["items"], names, namespace)
        elif kind == "map":
            _named(schema["values"], names, namespace)
        elif isinstance(kind, (dict, list)):
            _named(kind, names, namespace)


def _resolve(schema: Any, names: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema in names:
        return names[schema]
    if isinstance(schema, dict) and schema.get("type") not in (
            "record", "enum", "fixed", "error", "array", "map"):
        return _resolve(schema["type"], names)  # {"type": "long", "logicalType": ...}
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return "record" if schema["type"] == "error" else str(schema["type"])
    return str(schema)


def reading_problems(reader: Any, writer: Any, reader_names: dict[str, Any],
                     writer_names: dict[str, Any], path: str = "") -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can)."""
    reader, writer = _resolve(reader, reader_names), _resolve(writer, writer_names)
    where = path or "/"
    if isinstance(writer, list):
        problems = []
        for branch in writer:
            problems += reading_problems(reader, branch, reader_names, writer_names, path)
        return problems
    if isinstance(reader, list):
        for branch in reader:
            if not reading_problems(branch, writer, reader_names, writer_names, path):
                return []
        return [f"TYPE_MISMATCH at {where}: reader union lacks writer type {_kind(writer)}"]
    r_kind, w_kind = _kind(reader), _kind(writer)
    if r_kind != w_kind and r_kind not in _PROMOTIONS.get(w_kind, set()):
        return [f"TYPE_MISMATCH at {where}: reader type {r_kind} not compatible with "
                f"writer type {w_kind}"]
    if r_kind == "record":
        problems = []
        if reader["name"].rsplit(".", 1)[-1] != writer["name"].rsplit(".", 1)[-1]:
            problems.append(f"NAME_MISMATCH at {where}: {reader['name']} vs {writer['name']}")
        written = {item["name"]: item for item in writer["fields"]}
        for item in reader["fields"]:
            match = written.get(item["name"]) or next(
                (written[alias] for alias in item.get("aliases", []) if alias in written), None)
            if match is None:
                if "default" not in item:
                    problems.append(f"READER_FIELD_MISSING_DEFAULT_VALUE at "
                                    f"{path}/fields/{item['name']}: {item['name']}")
            else:
                problems += reading_problems(item["type"], match["type"], reader_names,
                                             writer_names, f"{path}/fields/{item['name']}")
        return problems
    if r_kind == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            return [f"MISSING_ENUM_SYMBOLS at {where}: {missing}"]
    if r_kind == "array":
        return reading_problems(reader["items"], writer["items"], reader_names, writer_names,
                                f"{path}/items")
    if r_kind == "map":
        return reading_problems(reader["values"], writer["values"], reader_names,
                                writer_names, f"{path}/values")
    if r_kind == "fixed" and reader.get("size") != writer.get("size"):
        return [f"FIXED_SIZE_MISMATCH at {where}"]
    return []


def _problems(reader_text: str, writer_text: str) -> list[str]:
    reader, writer = json.loads(reader_text), json.loads(writer_text)
    reader_names: dict[str, Any] = {}
    writer_names: dict[str, Any] = {}
    _named(reader, reader_names)
    _named(writer, writer_names)
    return reading_problems(reader, writer, reader_names, writer_names)


def compatibility_problems(level: str, new: str, existing: list[str]) -> list[str]:
    """The Confluent compatibility check of ``new`` against a subject's versions."""
    level = level.upper()
    if level == "NONE" or not existing:
        return []
    against = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    problems = []
    for old in against:
        if level.startswith(("BACKWARD", "FULL")):
            problems += _problems(new, old)
        if level.startswith(("FORWARD", "FULL")):
            problems += _problems(old, new)
    return problems


class RegistryServer:
    """An in-process Confluent-compatible schema registry (see the module docstring).

    Endpoints: POST /subjects/{s}/versions, POST /subjects/{s} (lookup), POST
    /compatibility/subjects/{s}/versions/latest, GET /schemas/ids/{id}, GET /subjects,
    GET /subjects/{s}/versions, GET/PUT /config and /config/{s}. ``down`` answers 503 to
    everything while set. ``users`` turns on basic auth; ``tls`` is (cert, key), with
    ``client_ca`` for mutual TLS.
    """

    kind = "stand-in"

    def __init__(self, users: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None, client_ca: Path | None = None,
                 compatibility: str = "BACKWARD") -> None:
        self.lock = threading.Lock()
        self.schemas: list[dict[str, str]] = []
        """Index i is schema id i + 1: {"schema": text[, "schemaType": kind]}."""
        self.subjects: dict[str, list[int]] = {}
        self.levels: dict[str, str] = {}
        self.default_level = compatibility
        self.users = users
        self.down = threading.Event()
        self.requests: list[tuple[str, str, int, str | None]] = []
        """(method, path, status, user) of every request answered."""
        self.headers_seen: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: Any, user: str | None = None) -> None:
                data = json.dumps(body).encode()
                with server.lock:
                    server.requests.append((self.command, self.path, status, user))
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="registry"')
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with server.lock:
                    server.headers_seen.append(dict(self.headers.items()))
                user = server._authenticate(self.headers.get("Authorization"))
                if server.users is not None and user is None:
                    self._reply(401, {"error_code": 401, "message": "Unauthorized"})
                    return
                if server.down.is_set():
                    self._reply(503, {"error_code": 50301, "message": "unavailable"}, user)
                    return
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    self._reply(400, {"error_code": 400, "message": "bad JSON"}, user)
                    return
                status, answer = server.route(self.command, self.path, body)
                self._reply(status, answer, user)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            if client_ca is not None:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(str(client_ca))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.port = int(self.server.server_address[1])
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RegistryServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _authenticate(self, header: str | None) -> str | None:
        if self.users is None or not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password else None

    # --- the API ---------------------------------------------------------------------

    def _add(self, text: str, kind: str) -> int:
        canonical = json.dumps(json.loads(text), sort_keys=True) if kind == "AVRO" else text
        for index, entry in enumerate(self.schemas):
            if entry.get("_canonical") == canonical and entry.get("schemaType", "AVRO") == kind:
                return index + 1
        entry = {"schema": text, "_canonical": canonical}
        if kind != "AVRO":
            entry["schemaType"] = kind
        self.schemas.append(entry)
        return len(self.schemas)

    def add(self, text: str, kind: str = "AVRO") -> int:
        """A schema under no subject (a writer that bypassed the registry's rules)."""
        with self.lock:
            return self._add(text, kind)

    def level(self, subject: str) -> str:
        return self.levels.get(subject, self.default_level)

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parsed = urllib.parse.urlsplit(path)
        parts = [urllib.parse.unquote(p) for p in parsed.path.strip("/").split("/") if p]
        with self.lock:
            return self._route(method, parts, body)

    def _find(self, subject: str, text: str) -> tuple[int, int] | None:
        canonical = json.dumps(json.loads(text), sort_keys=True)
        for version, schema_id in enumerate(self.subjects.get(subject, []), 1):
            if self.schemas[schema_id - 1].get("_canonical") == canonical:
                return version, schema_id
        return None

    def _texts(self, subject: str) -> list[str]:
        return [self.schemas[i - 1]["schema"] for i in self.subjects.get(subject, [])]

    def _route(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        if method == "GET" and parts[:2] == ["schemas", "ids"] and len(parts) == 3:
            index = int(parts[2]) - 1 if parts[2].isdigit() else -1
            if not 0 <= index < len(self.schemas):
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return 200, {k: v for k, v in self.schemas[index].items() if k[0] != "_"}
        if method == "GET" and parts == ["subjects"]:
            return 200, sorted(self.subjects)
        if parts[:1] == ["config"] and len(parts) <= 2:
            subject = parts[1] if len(parts) == 2 else None
            if method == "PUT":
                level = str(body["compatibility"]).upper()
                if subject is None:
                    self.default_level = level
                else:
                    self.levels[subject] = level
                return 200, {"compatibility": level}
            level = self.default_level if subject is None else self.level(subject)
            return 200, {"compatibilityLevel": level}
        if parts[:1] == ["subjects"] and len(parts) >= 2:
            subject = parts[1]
            if method == "GET" and parts[2:] == ["versions"]:
                if subject not in self.subjects:
                    return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
                return 200, list(range(1, len(self.subjects[subject]) + 1))
            if method == "POST" and len(parts) == 2:  # lookup
                if subject not in self.subjects:
                    return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
                found = self._find(subject, body["schema"])
                if found is None:
                    return 404, {"error_code": 40403, "message": "Schema not found"}
                return 200, {"subject": subject, "version": found[0], "id": found[1],
                             "schema": body["schema"]}
            if method == "POST" and parts[2:] == ["versions"]:
                kind = body.get("schemaType", "AVRO")
                try:
                    json.loads(body["schema"])
                except ValueError:
                    return 422, {"error_code": 42201, "message": "Invalid schema"}
                found = self._find(subject, body["schema"])
                if found is not None:
                    return 200, {"id": found[1]}
                problems = compatibility_problems(self.level(subject), body["schema"],
                                                  self._texts(subject))
                if problems:
                    return 409, {"error_code": 409, "message": (
                        "Schema being registered is incompatible with an earlier schema "
                        f"for subject \"{subject}\", details: {problems}")}
                schema_id = self._add(body["schema"], kind)
                self.subjects.setdefault(subject, []).append(schema_id)
                return 200, {"id": schema_id}
        if (method == "POST" and parts[:2] == ["compatibility", "subjects"]
                and len(parts) == 5 and parts[3] == "versions"):
            subject = parts[2]
            if subject not in self.subjects:
                return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
            if parts[4] != "latest":
                return 404, {"error_code": 40402, "message": "Version not found."}
            problems = compatibility_problems(self.level(subject), body["schema"],
                                              self._texts(subject)[-1:])
            return 200, {"is_compatible": not problems, "messages": problems}
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}


@dataclass
class ExternalRegistry:
    """A real registry named by the environment (see the module docstring)."""

    url: str
    kind = "external"

    def set_compatibility(self, subject: str, level: str) -> None:
        _call(self.url, "PUT", f"/config/{urllib.parse.quote(subject, safe='')}",
              {"compatibility": level})


def _call(url: str, method: str, path: str, body: Any = None) -> Any:
    from availability_contracts.registry import RegistrySettings, SchemaRegistry

    client = SchemaRegistry(RegistrySettings(url))
    return client._request(method, path, body)


def set_compatibility(registry: RegistryServer | ExternalRegistry, subject: str,
                      level: str) -> None:
    if isinstance(registry, RegistryServer):
        with registry.lock:
            registry.levels[subject] = level
    else:
        registry.set_compatibility(subject, level)


@contextmanager
def open_registry() -> Iterator[RegistryServer | ExternalRegistry]:
    """The environment's real registry, else a stand-in (open, no auth)."""
    url = os.environ.get(EXTERNAL_ENV)
    if url:
        yield ExternalRegistry(url)
        return
    with RegistryServer() as server:
        yield server


@contextmanager
def open_auth_registry(user: str, password: str
                       ) -> Iterator[tuple[str, RegistryServer | ExternalRegistry]]:
    """(URL with its credentials, registry): the environment's real registry with
    authentication, else a stand-in requiring ``user``/``password``."""
    url = os.environ.get(EXTERNAL_AUTH_ENV)
    if url:
        yield url, ExternalRegistry(url)
        return
    with RegistryServer(users={user: password}) as server:
        quoted = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
        yield server.url.replace("://", f"://{quoted}@"), server


# --- a throwaway PKI (the openssl CLI; the cryptography package is not a dependency) --


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(folder: Path) -> Pki:
    for name in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                 "extendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                 cwd=folder)
        (folder / f"{name}.ext").write_text(ext)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                 f"{name}.ext", cwd=folder)
    return Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key",
               folder / "client.pem", folder / "client.key", folder / "rogue-ca.pem")


def http_get(url: str, context: ssl.SSLContext | None = None) -> int:
    """Status of a bare GET (no client library), for "refused" checks."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
