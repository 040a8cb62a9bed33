"""`availability produce --file events.jsonl`: publish canonical events, all or nothing."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from confluent_kafka import KafkaException

from availability.cli import CommandError, add_brokers_argument, kafka_connection
from availability.event_file import MAX_LINE_BYTES, BadLine, read_event_file
from availability_contracts.codec import MAX_RECORD_BYTES, Codec, RegistryError, RegistryRetries
from availability_contracts.errors import shorten
from availability_contracts.topics import TopicNames
from availability_domain.events import MAX_ID_LENGTH, MAX_QUANTITY, MAX_TEXT_LENGTH, InventoryEvent
from availability_kafka.delivery import ConfirmedProducer, DeliveryFailed

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
REGISTRY_RETRIES = 5
"""Retries of an unreachable schema registry (about 6 s of backoff) before giving up:
a one-shot command should fail with a reason, not wait for ever as the engine does."""

_PARAGRAPHS = (
    "Publish canonical inventory events from a file of JSON lines (one object per line, "
    "the Avro field names of InventoryEvent; times as ISO-8601, no offset = UTC, or epoch "
    "milliseconds) to the events topic, key sku|location_id. Blank lines are skipped.",

    "All or nothing: the whole file is validated before anything is published. Every "
    f"line must be valid UTF-8 of at most {MAX_LINE_BYTES:,} bytes and valid JSON, pass "
    f"the event rules (ids up to {MAX_ID_LENGTH} characters, reason up to "
    f"{MAX_TEXT_LENGTH}, |quantity| up to {MAX_QUANTITY:,}, times from 1970 to the year "
    "9999, no lone surrogates or control characters in ids) and encode, with the codec "
    f"used for publishing, to an Avro record of at most {MAX_RECORD_BYTES:,} bytes. "
    "Every bad line is reported on stderr as FILE:LINE: reason; if there is any, nothing "
    "is published and the exit code is 1. A file that cannot be read is one error line "
    "and exit code 1.",

    "The file is read twice (validate, then publish), so memory stays small whatever its "
    "size; stdin and pipes are first copied to a temporary file. The file must not "
    "change in between: if its size or modification time changed during validation, "
    "nothing is published (exit 1); a line that is changed during publishing and then "
    "invalid is reported and not published, while the lines already sent stay published "
    "(exit 1). Every published message is confirmed by the broker before the command "
    "exits.",
)

DESCRIPTION = "\n\n".join(textwrap.fill(paragraph, width=80) for paragraph in _PARAGRAPHS)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keep the description's paragraphs; show defaults except None and False."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "produce",
        help="publish canonical events from a JSON-lines file (all or nothing)",
        description=DESCRIPTION,
        formatter_class=_Formatter,
    )
    parser.add_argument("--file", required=True, type=Path, help="JSON-lines file, or - for stdin")
    add_brokers_argument(parser)
    parser.add_argument("--topic", default=TopicNames().events, help="events topic")
    from availability.cli.registry_options import add_registry_arguments
    add_registry_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the file and report what would be published")
    parser.set_defaults(run=run)


def _unreadable(name: str, exc: OSError) -> CommandError:
    if isinstance(exc, FileNotFoundError):
        return CommandError(f"no such file: {name}")
    if isinstance(exc, IsADirectoryError):
        return CommandError(f"{name} is a directory, not a JSON-lines file")
    if isinstance(exc, PermissionError):
        return CommandError(f"cannot read {name}: permission denied")
    return CommandError(f"cannot read {name}: {exc.strerror or exc}")


@contextmanager
def _open_event_file(path: Path) -> Iterator[BinaryIO]:
    """The file opened for binary reading, seekable: stdin and pipes are spooled to a
    temporary file so that the two passes read the same bytes."""
    if str(path) == "-":
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool)
            spool.seek(0)
            yield spool
        return
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if stat.S_ISFIFO(mode):
        with path.open("rb") as pipe, tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(pipe, spool)
            spool.seek(0)
            yield spool
        return
    if not stat.S_ISREG(mode):
        raise CommandError(f"{path} is not a regular file (use --file - to read stdin)")
    with path.open("rb") as stream:
        yield stream


class _Encoder:
    """The publishing codec bound to the topic, so both passes encode identically."""

    def __init__(self, codec: Codec, topic: str) -> None:
        self.codec = codec
        self.topic = topic

    def __call__(self, event: InventoryEvent) -> bytes:
        return self.codec.encode_event(event, self.topic)


def _bounded_retries() -> RegistryRetries:
    retries = RegistryRetries()

    def give_up(error: RegistryError, attempt: int) -> None:
        if attempt > REGISTRY_RETRIES:
            raise error

    retries.on_retry.append(give_up)
    return retries


def _signature(stream: BinaryIO) -> tuple[int, int]:
    info = os.fstat(stream.fileno())
    return info.st_size, info.st_mtime_ns


def _validate(stream: BinaryIO, name: str, encode: _Encoder) -> int:
    """First pass: report every bad line; the number of events if there is none."""
    good = bad = 0
    for item in read_event_file(stream, encode):
        if isinstance(item, BadLine):
            bad += 1
            print(f"{name}:{item.line_number}: {item.reason}", file=sys.stderr)
        else:
            good += 1
    if bad:
        raise CommandError(f"{name}: {bad} invalid line(s), {good} valid; nothing published")
    return good


def _publish(stream: BinaryIO, name: str, encode: _Encoder, args: argparse.Namespace
             ) -> tuple[int, int]:
    """Second pass: re-read, re-check and publish; (delivered, lines that became bad)."""
    producer = ConfirmedProducer(kafka_connection(args, reach=True))
    changed = 0
    for item in read_event_file(stream, encode):
        if isinstance(item, BadLine):
            changed += 1
            print(f"{name}:{item.line_number}: {item.reason} (changed after validation; "
                  "not published)", file=sys.stderr)
            continue
        producer.produce(args.topic, item.payload, item.event.position_key)
    return producer.confirm(), changed


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not _TOPIC_NAME.fullmatch(args.topic):
        raise CommandError(f"--topic {shorten(args.topic)} is not a Kafka topic name (1 to 249 of "
                           "A-Z a-z 0-9 . _ -)")
    name = "<stdin>" if str(path) == "-" else str(path)
    from availability.cli.registry_options import registry_settings
    encode = _Encoder(Codec(registry_settings(args), _bounded_retries()), args.topic)
    try:
        with _open_event_file(path) as stream:
            before = _signature(stream)
            count = _validate(stream, name, encode)
            if args.dry_run:
                print(f"dry run: {name}: {count} event(s) valid; would be published to "
                      f"{args.topic}")
                return 0
            if _signature(stream) != before:
                raise CommandError(f"{name} changed while it was being validated; nothing "
                                   "published")
            stream.seek(0)
            delivered, changed = _publish(stream, name, encode, args)
    except OSError as exc:
        raise _unreadable(name, exc) from exc
    except RegistryError as exc:
        raise CommandError(f"schema registry request failed: {exc}; nothing published"
                           ) from exc
    except (DeliveryFailed, KafkaException) as exc:
        raise CommandError(f"publishing to {args.brokers} failed: {exc}") from exc
    if changed:
        raise CommandError(f"{name} changed while it was being published: {changed} line(s) "
                           f"became invalid and were not published; {delivered} event(s) "
                           f"published to {args.topic}")
    print(f"published {delivered} event(s) to {args.topic}")
    return 0
