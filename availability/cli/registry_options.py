"""The schema registry options every command with ``--schema-registry`` takes.

``add_registry_arguments(parser)`` adds them, ``registry_settings(args)`` turns them into
:class:`~availability_contracts.registry.RegistrySettings` (None: plain Avro), checked
once: a password file that cannot be read, a TLS file that does not load or an option
without ``--schema-registry`` is one clear line and a non-zero exit. The password is
read from a file, never from the command line, and never printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from availability.cli import CommandError
from availability_contracts.registry import (
    ENGINE_WRITES,
    SUBJECT_STRATEGIES,
    IncompatibleSchema,
    Registered,
    RegistryError,
    RegistryRetries,
    RegistrySettings,
    RegistrySettingsError,
    SchemaRegistry,
    register_contracts,
)
from availability_contracts.topics import TopicNames

__all__ = [
    "ENGINE_WRITES", "add_registry_arguments", "bounded_retries", "register_registry_contracts",
    "registry_member_args", "registry_settings",
]

DEFAULT_TIMEOUT_S = 10.0
RETRIES = 5
"""Retries of an unreachable registry (about 6 s of backoff) before a command gives up."""

_DEPENDENT = (
    ("schema_registry_user", "--schema-registry-user"),
    ("schema_registry_password_file", "--schema-registry-password-file"),
    ("schema_registry_ca", "--schema-registry-ca"),
    ("schema_registry_cert", "--schema-registry-cert"),
    ("schema_registry_key", "--schema-registry-key"),
)


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    """``--schema-registry URL`` and its auth, TLS, timeout and subject options."""
    group = parser.add_argument_group(
        "schema registry (optional)",
        "With --schema-registry, payloads use the Confluent wire format and schemas are "
        "registered and fetched there (docs/operations.md, Schema evolution).")
    group.add_argument("--schema-registry", default=None, metavar="URL",
                       help="Confluent-compatible Schema Registry URL (default: plain Avro); "
                            "https://USER:PASSWORD@host also gives basic-auth credentials, "
                            "which are never printed")
    group.add_argument("--schema-registry-user", default=None, metavar="USER",
                       help="basic-auth user (with --schema-registry-password-file)")
    group.add_argument("--schema-registry-password-file", type=Path, default=None,
                       metavar="FILE",
                       help="file holding the basic-auth password (one trailing newline "
                            "is ignored)")
    group.add_argument("--schema-registry-ca", type=Path, default=None, metavar="PEM",
                       help="CA bundle the registry's certificate must chain to (default: "
                            "the system's trust store)")
    group.add_argument("--schema-registry-cert", type=Path, default=None, metavar="PEM",
                       help="client certificate, for a registry that wants mutual TLS")
    group.add_argument("--schema-registry-key", type=Path, default=None, metavar="PEM",
                       help="private key of --schema-registry-cert (if not in that file)")
    group.add_argument("--schema-registry-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                       metavar="SECONDS",
                       help="timeout of one registry request (default: %(default)s)")
    group.add_argument("--schema-registry-subject-strategy", choices=SUBJECT_STRATEGIES,
                       default="topic",
                       help="subject names: topic = <topic>-value (TopicNameStrategy), "
                            "record = the record's full name, topic_record = "
                            "<topic>-<full name> (default: %(default)s)")


def _read_password(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"--schema-registry-password-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CommandError(f"cannot read --schema-registry-password-file {path}: "
                           f"{reason}") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise CommandError(f"--schema-registry-password-file {path} is empty")
    return password


def registry_settings(args: argparse.Namespace) -> RegistrySettings | None:
    """The registry the options name, or None for plain Avro; a :class:`CommandError`
    for options that cannot work. Computed once per command."""
    cached: RegistrySettings | None = getattr(args, "_registry_settings", None)
    if cached is not None:
        return cached
    url = getattr(args, "schema_registry", None)
    if not url:
        given = [flag for attr, flag in _DEPENDENT if getattr(args, attr, None) is not None]
        if given:
            raise CommandError(f"{', '.join(given)} given without --schema-registry")
        return None
    user = getattr(args, "schema_registry_user", None)
    password_file = getattr(args, "schema_registry_password_file", None)
    if (user is None) != (password_file is None):
        raise CommandError("--schema-registry-user and --schema-registry-password-file go "
                           "together")
    try:
        settings = RegistrySettings(
            url, user=user,
            password=_read_password(password_file) if password_file is not None else None,
            ca_file=getattr(args, "schema_registry_ca", None),
            cert_file=getattr(args, "schema_registry_cert", None),
            key_file=getattr(args, "schema_registry_key", None),
            timeout_s=getattr(args, "schema_registry_timeout", DEFAULT_TIMEOUT_S),
            subject_strategy=getattr(args, "schema_registry_subject_strategy", "topic"),
        )
        settings.ssl_context()  # a CA or key that does not load fails here, not later
    except RegistrySettingsError as exc:
        raise CommandError(f"--schema-registry: {exc}") from None
    args._registry_settings = settings
    return settings


def registry_member_args(args: argparse.Namespace) -> list[str]:
    """The registry options again, for a child process (an engine cluster member) to
    parse the same way: the password stays in its file."""
    url = getattr(args, "schema_registry", None)
    if not url:
        return []
    argv = ["--schema-registry", url]
    for attr, flag in _DEPENDENT:
        value = getattr(args, attr, None)
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--schema-registry-timeout",
             str(getattr(args, "schema_registry_timeout", DEFAULT_TIMEOUT_S)),
             "--schema-registry-subject-strategy",
             getattr(args, "schema_registry_subject_strategy", "topic")]
    return argv


def bounded_retries(limit: int = RETRIES) -> RegistryRetries:
    """Backoff that gives up after ``limit`` retries: a command fails with the reason
    instead of waiting for ever as the engine's hot path does."""
    retries = RegistryRetries()

    def give_up(error: RegistryError, attempt: int) -> None:
        if attempt > limit:
            raise error

    retries.on_retry.append(give_up)
    return retries


def register_registry_contracts(args: argparse.Namespace, topics: TopicNames,
                                schemas: Iterable[str] | None = None) -> list[Registered]:
    """Register the contracts (default: all four; the engine passes ``ENGINE_WRITES``)
    under their subjects for ``topics``, each checked for compatibility first, before
    anything is written. Nothing without ``--schema-registry``. An incompatible schema
    or an unreachable registry is a :class:`CommandError` naming the subject and the
    reason."""
    settings = registry_settings(args)
    if settings is None:
        return []
    try:
        return register_contracts(SchemaRegistry(settings), topics, schemas, bounded_retries())
    except IncompatibleSchema as exc:
        raise CommandError(str(exc)) from None
    except RegistryError as exc:
        raise CommandError(f"schema registry request failed: {exc}") from None
