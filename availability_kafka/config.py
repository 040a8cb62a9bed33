"""How every Kafka client of the project connects: ``--brokers`` plus a properties file
of librdkafka settings (``--kafka-config``, default ``$AVAILABILITY_KAFKA_CONFIG``).

The file carries what a managed Kafka needs (``security.protocol``, ``sasl.mechanism``,
``sasl.username``, ``sasl.password``, ``ssl.ca.location``, ...). It may override the
project's client defaults, except the settings the engine's guarantees rest on
(:data:`RESERVED`): those are refused with the reason, so nobody turns off delivery
confirmation or idempotence by accident. Secrets are never shown: :meth:`describe`
masks them, and nothing here logs a value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from availability_contracts.errors import AvailabilityError

ENV_VAR = "AVAILABILITY_KAFKA_CONFIG"

RESERVED: dict[str, str] = {
    "bootstrap.servers": "give the brokers with --brokers (or $AVAILABILITY_BROKERS)",
    "metadata.broker.list": "give the brokers with --brokers (or $AVAILABILITY_BROKERS)",
    "enable.idempotence": "producers are always idempotent: retries never duplicate a record",
    "acks": "producers always wait for all in-sync replicas (acks=all)",
    "request.required.acks": "producers always wait for all in-sync replicas (acks=all)",
    "transactional.id": "the engine's exactly-once rests on its recovery snapshots, not on "
                        "Kafka transactions",
    "group.id": "each part names its own consumer group (see docs/operations.md)",
    "enable.auto.commit": "progress is committed by the engine and the replicas themselves",
    "enable.auto.offset.store": "progress is committed by the engine and the replicas "
                                "themselves",
    "auto.offset.reset": "where reading starts is decided by the recovery state",
}
"""Settings a file may not set, and why."""

_SECRET_WORDS = ("password", "secret", "jaas", "key.pem", "token")


def is_secret(key: str) -> bool:
    """Whether a setting's value must never be shown."""
    return any(word in key for word in _SECRET_WORDS)


class KafkaConfigError(AvailabilityError, ValueError):
    """A client settings file that cannot be used; the message names the file, the line
    or key, and what is wrong (never a secret value)."""

    code = "kafka_config"


@dataclass(frozen=True)
class KafkaConnection:
    """Brokers and client settings; picklable, so engine cluster members get it too."""

    brokers: str
    settings: Mapping[str, str] = field(default_factory=dict)
    """The file's settings, applied over the project's defaults of each client."""
    source: str | None = None
    """The file they came from, for messages."""

    @classmethod
    def of(cls, target: KafkaConnection | str) -> KafkaConnection:
        """Accept a bare bootstrap string where a connection is expected."""
        return target if isinstance(target, KafkaConnection) else cls(target)

    def client(self, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Settings for one client: its defaults, then the file, then the brokers."""
        return {**(defaults or {}), **self.settings, "bootstrap.servers": self.brokers}

    @property
    def mechanism(self) -> str:
        """How the client authenticates, for messages: e.g. ``SASL_SSL/SCRAM-SHA-512``."""
        protocol = self.settings.get("security.protocol", "PLAINTEXT").upper()
        if protocol.startswith("SASL"):
            return f"{protocol}/{self.settings.get('sasl.mechanism', 'GSSAPI').upper()}"
        return protocol

    def describe(self) -> str:
        """The connection for logs: brokers, mechanism, user; secrets masked."""
        user = self.settings.get("sasl.username")
        who = f" as {user}" if user else ""
        origin = f" (settings from {self.source})" if self.source else ""
        return f"{self.brokers} over {self.mechanism}{who}{origin}"

    def masked_settings(self) -> dict[str, str]:
        return {key: "***" if is_secret(key) else value for key, value in self.settings.items()}


def load_kafka_config(path: Path | str | None, brokers: str,
                      check: Callable[[dict[str, str]], None] | None = None
                      ) -> KafkaConnection:
    """``brokers`` with the settings of ``path`` (None: ``$AVAILABILITY_KAFKA_CONFIG``, or
    none). ``check`` may validate the settings against the client library."""
    if path is None:
        path = os.environ.get(ENV_VAR) or None
    if path is None:
        return KafkaConnection(brokers)
    source = str(path)
    settings = parse_properties(Path(path))
    for key in settings:
        if key in RESERVED:
            raise KafkaConfigError(f"{source}: {key} cannot be set here: {RESERVED[key]}")
    if check is not None:
        try:
            check(dict(settings))
        except Exception as exc:  # the client library names the key it refuses
            raise KafkaConfigError(f"{source}: refused by the Kafka client: "
                                   f"{_without_secrets(str(exc), settings)}") from None
    return KafkaConnection(brokers, settings, source)


def parse_properties(path: Path) -> dict[str, str]:
    """A Java-style properties file: ``key=value`` or ``key: value`` per line, ``#`` or
    ``!`` comments, blank lines ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KafkaConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise KafkaConfigError(f"{path}: is a directory, not a properties file") from None
    except UnicodeDecodeError:
        raise KafkaConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise KafkaConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if cut < 0:
            raise KafkaConfigError(f"{path}:{number}: expected key=value, got a line without "
                                   "'=' (values are not shown)")
        key, value = line[:cut].strip(), line[cut + 1:].strip()
        if key in settings:
            raise KafkaConfigError(f"{path}:{number}: {key} is set twice")
        settings[key] = value
    return settings


def _without_secrets(message: str, settings: Mapping[str, str]) -> str:
    for key, value in settings.items():
        if is_secret(key) and value:
            message = message.replace(value, "***")
    return message


def check_with_librdkafka(settings: dict[str, str]) -> None:
    """Let librdkafka refuse an unknown key or a bad value now, naming it, rather than at
    the first connection. Builds a client with no brokers: nothing connects."""
    from confluent_kafka import Producer

    Producer({**settings, "log_level": 0})
