"""The replica's RocksDB (rocksdict, raw bytes) and its key layout.

One namespace byte, then UTF-8 text:

====================================  ==============================================
``c`` + ``channel|sku[|location_id]``  channel frame (see :mod:`frames`)
``p`` + ``sku|location_id``            position frame
``k`` + ``channel``                    ``pooled`` or ``per-location``: channels seen
``o`` + ``topic|partition``            next offset to read, 8 bytes big-endian
``m:topics``                           ``positions-topic|channels-topic`` of the data
====================================  ==============================================

Values and the offsets that produced them are written in one WriteBatch, so after a
crash the store holds exactly the records up to its stored offsets and a restart
resumes there. A data dir remembers which topics it was built from and refuses others,
so two sources never mix in one store.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch

from availability_api.validation import DELIMITER

CHANNEL = b"c"
POSITION = b"p"
KIND = b"k"
OFFSET = b"o"
TOPICS = b"m:topics"
POOLED = b"pooled"
PER_LOCATION = b"per-location"
_OFFSET = struct.Struct(">q")

TopicPartitionKey = tuple[str, int]


class StoreMismatch(RuntimeError):
    """The data dir was built from other topics than the ones configured."""


@dataclass
class StoreChanges:
    """Everything one applied batch of snapshots changes; None deletes a key."""

    channels: dict[str, bytes | None] = field(default_factory=dict)
    positions: dict[str, bytes | None] = field(default_factory=dict)
    kinds: dict[str, bool] = field(default_factory=dict)
    offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.channels or self.positions or self.kinds or self.offsets)


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)  # point lookups of absent SKUs skip the data blocks
    options.set_block_based_table_factory(table)
    return options


class ReplicaStore:
    """Point and prefix reads for the servicer, atomic batch writes for the replica."""

    def __init__(self, path: Path, positions_topic: str, channels_topic: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = Rdict(str(path), _options())
        source = f"{positions_topic}{DELIMITER}{channels_topic}".encode()
        stored = self._db.get(TOPICS)
        if stored is None:
            self._db.put(TOPICS, source)
        elif stored != source:
            self._db.close()
            raise StoreMismatch(
                f"data dir {path} holds snapshots of topics {stored.decode()!r}, not "
                f"{source.decode()!r}; use another --data-dir for other topics"
            )

    def close(self) -> None:
        self._db.close()

    def _prefixed(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items(from_key=prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    def offsets(self) -> dict[TopicPartitionKey, int]:
        """Stored next offset per (topic, partition)."""
        result: dict[TopicPartitionKey, int] = {}
        for key, value in self._prefixed(OFFSET):
            topic, _, partition = key[1:].decode().rpartition(DELIMITER)
            result[(topic, int(partition))] = _OFFSET.unpack(value)[0]
        return result

    def channel_kinds(self) -> dict[str, bool]:
        """Every channel seen so far -> True when it is per-location."""
        return {key[1:].decode(): value == PER_LOCATION for key, value in self._prefixed(KIND)}

    def channel_frame(self, key: str) -> bytes | None:
        return self._db.get(CHANNEL + key.encode())

    def channel_frames(self, keys: Sequence[str]) -> list[bytes | None]:
        """Frames of many channel keys in one multi-get, in order; None where absent."""
        return self._db.get([CHANNEL + key.encode() for key in keys])

    def position_frames_by_key(self, keys: Sequence[str]) -> list[bytes | None]:
        """Frames of many ``sku|location_id`` keys in one multi-get; None where absent."""
        return self._db.get([POSITION + key.encode() for key in keys])

    def position_frames(self, sku: str, location_ids: Sequence[str] = ()) -> list[bytes]:
        """Frames of one SKU's positions: the given locations in order, else all of them."""
        if location_ids:
            keys = [POSITION + f"{sku}{DELIMITER}{loc}".encode() for loc in location_ids]
            return [frame for frame in self._db.get(keys) if frame is not None]
        return [value for _, value in self._prefixed(POSITION + f"{sku}{DELIMITER}".encode())]

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
            batch.put(OFFSET + f"{topic}{DELIMITER}{partition}".encode(), _OFFSET.pack(offset))
        self._db.write(batch)
