"""The replica's RocksDB (rocksdict, raw bytes) and its key layout.

One namespace byte, then UTF-8 text:

====================================  ==============================================
``c`` + ``channel|sku[|location_id]``  channel frame (see :mod:`frames`)
``p`` + ``sku|location_id``            position frame
``k`` + ``channel``                    ``pooled`` or ``per-location``: channels seen
``o`` + ``topic|partition``            next offset to read, 8 bytes big-endian
``m:topics``                           ``positions-topic|channels-topic`` of the data
``m:replica-id``                       this data dir's replica id (``host-8hex``)
====================================  ==============================================

Values and the offsets that produced them are written in one WriteBatch, so after a
crash the store holds exactly the records up to its stored offsets and a restart
resumes there. A data dir remembers which topics it was built from and refuses others,
so two sources never mix in one store. The replica id is made once, when the data dir
is created (or first opened by a version that has it), and names the consumer group the
replica reports its progress to, so a restarted replica keeps its group.

One writer per data dir: ``replica.lock`` next to the RocksDB files holds the pid of
the replica that has it open, under an ``flock``. The kernel drops the lock when that
process dies (kill -9 included), so a stale file never blocks a restart, and two
stores opened by one process conflict too (RocksDB's own ``LOCK`` would refuse the
second one only with a raw IO error).

Channel answers (what Get and BatchGet read) are also kept in a dict, loaded when the
store opens and updated after each batch is written: a RocksDB point read through
rocksdict costs ~5-8 us here, a dict lookup ~0.3 us, and BatchGet reads up to 1,000
keys per call. RocksDB stays the durable copy (a restart needs no replay); a catalogue
whose channel answers do not fit in memory turns the dict off
(``channels_in_memory=False``, ``--no-channels-in-memory``). Positions are read by
prefix from RocksDB only.

Every failure to use the data dir (in use, not writable, disk full) is a
:class:`StoreError` whose text names the path: one line for the operator.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch

from availability_contracts.errors import AvailabilityError
from availability_contracts.keys import KEY_DELIMITER

CHANNEL = b"c"
POSITION = b"p"
KIND = b"k"
OFFSET = b"o"
TOPICS = b"m:topics"
REPLICA_ID = b"m:replica-id"
POOLED = b"pooled"
PER_LOCATION = b"per-location"
_OFFSET = struct.Struct(">q")
LOCK_FILE = "replica.lock"

TopicPartitionKey = tuple[str, int]
T = TypeVar("T")


class StoreError(AvailabilityError, RuntimeError):
    """The data dir cannot be used; the message names the path and what is wrong."""

    code = "data_dir"


class StoreMismatch(StoreError):
    """The data dir was built from other topics than the ones configured."""

    code = "data_dir_mismatch"


class DataDirInUse(StoreError):
    """Another replica, in this process or another, has the data dir open."""

    code = "data_dir_in_use"


@dataclass
class StoreChanges:
    """Everything one applied batch of snapshots changes; None deletes a key."""

    channels: dict[str, bytes | None] = field(default_factory=dict)
    positions: dict[str, bytes | None] = field(default_factory=dict)
    kinds: dict[str, bool] = field(default_factory=dict)
    offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.channels or self.positions or self.kinds or self.offsets)


def new_replica_id(hostname: str | None = None) -> str:
    """``<hostname>-<8 hex>``: the host for people, the hex so two replicas of one host
    (or hosts of one name) differ. The host keeps letters, digits, ``.``, ``_``, ``-``."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "-",
                  socket.gethostname() if hostname is None else hostname).strip("-.")
    return f"{host[:64] or 'replica'}-{secrets.token_hex(4)}"


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)  # point lookups of absent SKUs skip the data blocks
    options.set_block_based_table_factory(table)
    return options


def _claim(path: Path) -> int:
    """Create the data dir and take its writer lock; the descriptor holding the lock."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create data dir {path}: {exc.strerror or exc}") from None
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"data dir {path} is not writable: cannot open {lock_path.name}: "
                         f"{exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip() or "unknown"
        os.close(fd)
        if holder == str(os.getpid()):
            holder += ", this process"
        raise DataDirInUse(
            f"data dir {path} is in use by another replica (pid {holder}, lock "
            f"{lock_path.name}); stop it first, or give this replica its own --data-dir"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"cannot write {lock_path}: {exc.strerror or exc}") from None
    return fd


class ReplicaStore:
    """Point and prefix reads for the servicer, atomic batch writes for the replica."""

    def __init__(self, path: Path, positions_topic: str, channels_topic: str, *,
                 channels_in_memory: bool = True) -> None:
        self.path = path
        self._lock: int | None = _claim(path)
        self._channels: dict[str, bytes] | None = None
        """Every channel frame by key, when kept in memory (see the module docstring)."""
        self.channels_load_seconds = 0.0
        """How long reading the channel answers into memory took at open."""
        try:
            self._db: Any = self._rocks("open", lambda: Rdict(str(path), _options()))
            source = f"{positions_topic}{KEY_DELIMITER}{channels_topic}".encode()
            stored = self._db.get(TOPICS)
            if stored is None:
                self._rocks("write to", lambda: self._db.put(TOPICS, source))
            elif stored != source:
                self._db.close()
                raise StoreMismatch(
                    f"data dir {path} holds snapshots of topics {stored.decode()!r}, not "
                    f"{source.decode()!r}; use another --data-dir for other topics"
                )
            self.replica_id: str = self._replica_id()
            if channels_in_memory:
                began = time.monotonic()
                self._channels = self._rocks("read", self._load_channels)
                self.channels_load_seconds = time.monotonic() - began
        except BaseException:
            self._release()
            raise

    def _replica_id(self) -> str:
        """This data dir's replica id, made and stored on first use."""
        stored = self._db.get(REPLICA_ID)
        if stored is not None:
            return str(stored.decode())
        made = new_replica_id()
        try:
            self._rocks("write to", lambda: self._db.put(REPLICA_ID, made.encode()))
        except StoreError:
            self._db.close()
            raise
        return made

    def _load_channels(self) -> dict[str, bytes]:
        return {key[1:].decode(): value for key, value in self._prefixed(CHANNEL)}

    @property
    def channels_in_memory(self) -> tuple[int, int] | None:
        """(keys, bytes of keys and frames) of the channel answers held in memory."""
        if self._channels is None:
            return None
        return len(self._channels), sum(len(key) + len(frame)
                                        for key, frame in self._channels.items())

    def _rocks(self, action: str, call: Callable[[], T]) -> T:
        """``call()``; RocksDB's failures (a bare Exception) as a StoreError naming the dir."""
        try:
            return call()
        except Exception as exc:
            raise StoreError(f"cannot {action} the replica store in {self.path}: {exc}"
                             ) from None

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def close(self) -> None:
        """Close RocksDB (flushing it), then release the data dir even if that failed."""
        if self._lock is None:
            return
        try:
            self._rocks("close", self._db.close)
        finally:
            self._release()

    def _prefixed(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items(from_key=prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    def offsets(self) -> dict[TopicPartitionKey, int]:
        """Stored next offset per (topic, partition)."""
        result: dict[TopicPartitionKey, int] = {}
        for key, value in self._prefixed(OFFSET):
            topic, _, partition = key[1:].decode().rpartition(KEY_DELIMITER)
            result[(topic, int(partition))] = _OFFSET.unpack(value)[0]
        return result

    def channel_kinds(self) -> dict[str, bool]:
        """Every channel seen so far -> True when it is per-location."""
        return {key[1:].decode(): value == PER_LOCATION for key, value in self._prefixed(KIND)}

    def channel_frame(self, key: str) -> bytes | None:
        if self._channels is not None:
            return self._channels.get(key)
        return self._db.get(CHANNEL + key.encode())

    def channel_frames(self, keys: Sequence[str]) -> list[bytes | None]:
        """Frames of many channel keys, in order; None where absent."""
        if self._channels is not None:
            get = self._channels.get
            return [get(key) for key in keys]
        return self._db.get([CHANNEL + key.encode() for key in keys])

    def position_frames_by_key(self, keys: Sequence[str]) -> list[bytes | None]:
        """Frames of many ``sku|location_id`` keys in one multi-get; None where absent."""
        return self._db.get([POSITION + key.encode() for key in keys])

    def position_frames(self, sku: str, location_ids: Sequence[str] = ()) -> list[bytes]:
        """Frames of one SKU's positions: the given locations in order, else all of them."""
        if location_ids:
            keys = [POSITION + f"{sku}{KEY_DELIMITER}{loc}".encode() for loc in location_ids]
            return [frame for frame in self._db.get(keys) if frame is not None]
        return [value for _, value in self._prefixed(POSITION + f"{sku}{KEY_DELIMITER}".encode())]

    def write(self, changes: StoreChanges) -> None:
        """Apply one batch atomically: values, channel kinds and offsets together."""
        batch = WriteBatch(raw_mode=True)
        for prefix, values in ((CHANNEL, changes.channels), (POSITION, changes.positions)):
            for key, frame in values.items():
                if frame is None:
                    batch.delete(prefix + key.encode())
                else:
                    batch.put(prefix + key.encode(), frame)
        for channel, per_location in changes.kinds.items():
            batch.put(KIND + channel.encode(), PER_LOCATION if per_location else POOLED)
        for (topic, partition), offset in changes.offsets.items():
            batch.put(OFFSET + f"{topic}{KEY_DELIMITER}{partition}".encode(), _OFFSET.pack(offset))
        self._rocks("write to", lambda: self._db.write(batch))
        memory = self._channels
        if memory is not None:
            for key, frame in changes.channels.items():
                if frame is None:
                    memory.pop(key, None)
                else:
                    memory[key] = frame
