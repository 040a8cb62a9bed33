"""The local broker's SASL_SSL listener: certificates, the SCRAM user and its client file.

Made once per home, under ``<home>/security/`` (mode 0700):

    ca.pem, ca.key                  a private CA (EC P-256, 10 years), made with `openssl`
    broker.pem, broker.key          the broker's certificate for 127.0.0.1 and localhost
                                    (signed by that CA) and its PKCS#8 key
    client-sasl-ssl.properties      ready client settings for the SCRAM-SHA-512 user
                                    (security.protocol, sasl.*, ssl.ca.location), mode 0600

The user's password is random (``secrets``), made when the properties file is first
written and kept in that file only; nothing here prints or logs it. The broker holds
the SCRAM credential (salted, in its KRaft metadata), set through the AdminClient on
the PLAINTEXT listener after start, so it works for a data dir formatted long before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from availability_kafka.config import KafkaConfigError, parse_properties

SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_USER = "availability"
SCRAM_ITERATIONS = 8192
LISTENER = "SASL_SSL"
CERT_DAYS = 3650
RENEW_BEFORE_S = 7 * 24 * 3600  # regenerate a certificate that expires within a week
CLIENT_CONFIG_NAME = "client-sasl-ssl.properties"


class SecurityError(Exception):
    """The listener's material could not be made; ``details`` is the tool's output."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class SecurityFiles:
    """Paths of the listener's material under ``<home>/security``."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.directory / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.directory / "broker.key"

    @property
    def client_config(self) -> Path:
        return self.directory / CLIENT_CONFIG_NAME

    def client_settings(self) -> dict[str, str]:
        """The client file's librdkafka settings (holds the password: never show them)."""
        return parse_properties(self.client_config)

    def password(self) -> str | None:
        """The SCRAM user's password from the client file, None if there is none yet."""
        try:
            return self.client_settings().get("sasl.password") or None
        except KafkaConfigError:
            return None

    # -- for server.properties

    def keystore_chain(self) -> str:
        """Broker certificate then CA, as a one-line properties value."""
        return _property_value(self.broker_cert.read_text() + self.ca_cert.read_text())

    def keystore_key(self) -> str:
        return _property_value(self.broker_key.read_text())


def _property_value(pem: str) -> str:
    """PEM text as a java.util.Properties value: newlines as ``\\n`` escapes. They
    matter: Kafka's PEM parser finds the entries of a chain line by line."""
    return "\\n".join(line.strip() for line in pem.strip().splitlines())


def _openssl() -> str:
    found = shutil.which("openssl")
    if not found:
        raise SecurityError("`openssl` not found on PATH (e.g. `apt-get install openssl`); "
                            "it makes the SASL_SSL listener's certificates")
    return found


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SecurityError(f"openssl could not {what} (exit {proc.returncode})",
                            details=(proc.stdout + proc.stderr).strip())


def _valid_for(openssl: str, cert: Path, seconds: int) -> bool:
    """Whether ``cert`` is readable and still valid ``seconds`` from now."""
    if not cert.is_file():
        return False
    proc = subprocess.run([openssl, "x509", "-noout", "-checkend", str(seconds), "-in", str(cert)],
                          capture_output=True, check=False, stdin=subprocess.DEVNULL)
    return proc.returncode == 0


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[broker]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _make_certificates(files: SecurityFiles, openssl: str) -> None:
    """A new CA and broker certificate, written next to each other then moved in place."""
    with tempfile.TemporaryDirectory(prefix=".certs-", dir=files.directory) as tmp:
        work = Path(tmp)
        config = work / "openssl.cnf"
        config.write_text(_OPENSSL_CONFIG)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        _run([openssl, "req", "-x509", *ec, "-config", str(config), "-extensions", "ca",
              "-keyout", str(work / "ca.key"), "-out", str(work / "ca.pem"),
              "-days", str(CERT_DAYS), "-sha256",
              "-subj", "/O=availability-engine/CN=availability-engine local Kafka CA"],
             "make the local CA")
        _run([openssl, "req", "-new", *ec, "-config", str(config),
              "-keyout", str(work / "broker.key"), "-out", str(work / "broker.csr"),
              "-subj", "/O=availability-engine/CN=localhost"],
             "make the broker's key")
        _run([openssl, "x509", "-req", "-in", str(work / "broker.csr"),
              "-CA", str(work / "ca.pem"), "-CAkey", str(work / "ca.key"),
              "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(CERT_DAYS), "-sha256",
              "-extfile", str(config), "-extensions", "broker", "-out", str(work / "broker.pem")],
             "sign the broker's certificate")
        for name in ("ca.key", "broker.key"):
            (work / name).chmod(0o600)
        # The CA last: a half-done run leaves no CA, so the next start makes all of it again.
        for name in ("ca.key", "broker.key", "broker.pem", "ca.pem"):
            os.replace(work / name, files.directory / name)


def _client_properties(files: SecurityFiles, password: str, bootstrap: str) -> str:
    return (
        "# Client settings for the local Kafka's SASL_SSL listener, user "
        f"{SCRAM_USER} ({SCRAM_MECHANISM}).\n"
        "# Written by `availability kafka start`; the password is random, made once for this\n"
        "# home. Keep this file private (mode 0600). Use it with any `availability` command:\n"
        f"#   --brokers {bootstrap} --kafka-config {files.client_config}\n"
        "security.protocol=SASL_SSL\n"
        f"sasl.mechanism={SCRAM_MECHANISM}\n"
        f"sasl.username={SCRAM_USER}\n"
        f"sasl.password={password}\n"
        f"ssl.ca.location={files.ca_cert}\n"
    )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only from the start."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:  # mkstemp creates the file with mode 0600
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_security(directory: Path, bootstrap: str, certificates: bool = True
                    ) -> tuple[SecurityFiles, list[str]]:
    """Certificates and the client file, made only where missing (or, with
    ``certificates``, expiring within a week: before a launch, never under a running
    broker); returns the files and what was made. Call with the start lock held."""
    files = SecurityFiles(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    made: list[str] = []
    needed = (files.ca_key, files.broker_key, files.ca_cert, files.broker_cert)
    if certificates or not all(p.is_file() for p in needed):
        openssl = _openssl()
        if not (all(p.is_file() for p in needed)
                and _valid_for(openssl, files.ca_cert, RENEW_BEFORE_S)
                and _valid_for(openssl, files.broker_cert, RENEW_BEFORE_S)):
            started = time.monotonic()
            _make_certificates(files, openssl)
            made.append(f"a CA and a broker certificate for 127.0.0.1/localhost "
                        f"({time.monotonic() - started:.1f} s)")
    password = files.password()
    if password is None:
        password = secrets.token_urlsafe(24)
        made.append(f"a random password for {SCRAM_USER}")
    text = _client_properties(files, password, bootstrap)
    try:
        current = files.client_config.read_text()
    except OSError:
        current = None
    if current != text:
        _write_private(files.client_config, text)
    files.client_config.chmod(0o600)
    return files, made


# --------------------------------------------------------------------------- SCRAM user


def _quiet_logger() -> logging.Logger:
    """librdkafka's log lines (e.g. each refused login) go nowhere, not to stderr."""
    logger = logging.getLogger("availability.local_kafka.librdkafka")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def ensure_scram_user(plaintext: str, password: str, timeout: float = 10.0) -> bool:
    """Give the user a SCRAM-SHA-512 credential if it has none; True when one was set."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": plaintext, "logger": _quiet_logger()})
    try:
        described = admin.describe_user_scram_credentials([SCRAM_USER],
                                                          request_timeout=timeout)
        description = described[SCRAM_USER].result()
        if any(info.mechanism.name == SCRAM_MECHANISM.replace("-", "_")
               for info in description.scram_credential_infos):
            return False
    except Exception:  # RESOURCE_NOT_FOUND for an unknown user: set it
        pass
    set_scram_password(plaintext, password, timeout)
    return True


def set_scram_password(plaintext: str, password: str, timeout: float = 10.0) -> None:
    """Upsert the user's credential (a new salt each time) through the PLAINTEXT listener."""
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({"bootstrap.servers": plaintext, "logger": _quiet_logger()})
    upsert = UserScramCredentialUpsertion(
        SCRAM_USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
        password.encode())
    futures = admin.alter_user_scram_credentials([upsert], request_timeout=timeout)
    futures[SCRAM_USER].result()


@dataclass(frozen=True)
class Login:
    """How a SASL_SSL metadata request went: ``ok``; else ``auth_refused`` (the broker
    refused the credential), ``tls_failed`` (the handshake failed) or no answer, with
    ``reason``."""

    ok: bool
    auth_refused: bool = False
    tls_failed: bool = False
    reason: str = ""


def sasl_login(bootstrap: str, settings: Mapping[str, str], timeout: float = 5.0) -> Login:
    """Log in at ``bootstrap`` with the client ``settings`` and ask for metadata. Returns
    as soon as the broker refuses, without waiting for the timeout; never shows the
    password (librdkafka's messages do not contain it)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                            KafkaError._SSL):
            errors.append(error)

    admin = AdminClient({**settings, "bootstrap.servers": bootstrap, "error_cb": on_error,
                         "logger": _quiet_logger(),
                         "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000))})
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            if admin.list_topics(timeout=0.25).brokers:
                return Login(True)
        except KafkaException as exc:
            last = exc.args[0].str() if exc.args else str(exc)
        admin.poll(0)  # serves error_cb
        if errors:
            tls = errors[0].code() == KafkaError._SSL
            return Login(False, auth_refused=not tls, tls_failed=tls, reason=errors[0].str())
        if time.monotonic() >= deadline:
            return Login(False, reason=f"no answer within {timeout:.0f} s: {last}")
