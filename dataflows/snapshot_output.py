"""A SKU's snapshots as sink records: the compiled publisher, or the reference and the codec.

``native/domain`` (Rust, built by every install) publishes and encodes in one call
with the results of :meth:`SnapshotPublisher.publish` followed by :func:`encode_snapshots`:
the same snapshots, versions, order and bytes (tests compare both on random disordered
streams and on the benchmark workload). :class:`SnapshotPublisher` stays the readable
definition. It runs when the extension is not built or ``AVAILABILITY_PURE_PYTHON=1``
asks for it, and for what is rare: a republish (restore, rules change) runs on the
reference, converted from and back to the compiled state. A recovery snapshot holds the
reference's format (the same bytes) whichever implementation wrote it; the compiled
output restores the publisher from it directly (:meth:`CompiledSnapshotOutput.loads`).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Collection, Iterable
from functools import partial
from typing import Any, Literal, Protocol

from availability_contracts.codec import Codec
from availability_contracts.hot_codec import load_compiled
from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA
from availability_contracts.topics import TopicNames
from availability_domain.inventory import SkuInventory
from availability_domain.rules import Rules
from availability_domain.snapshots import (
    ChannelSnapshot,
    NextVersion,
    PositionSnapshot,
    SnapshotPublisher,
)
from dataflows.kafka_sink import OutgoingRecord
from dataflows.metrics import CHANNEL_SNAPSHOTS, CHANNEL_TOMBSTONES, POSITION_SNAPSHOTS

Implementation = Literal["compiled", "python"]
Encoder = Callable[[list[PositionSnapshot], list[ChannelSnapshot], list[str], int],
                  list[OutgoingRecord]]
"""(positions, channels, deleted channel keys, origin ms) -> records for the sink."""


class Publisher(Protocol):
    """What a SKU's state holds: a :class:`SnapshotPublisher` or the compiled one."""

    def __reduce__(self) -> tuple[Any, ...]: ...


_native = load_compiled("availability_domain._core")
IMPLEMENTATION: Implementation = "python" if _native is None else "compiled"


def encode_snapshots(codec: Codec, topics: TopicNames, positions: list[PositionSnapshot],
                     channels: list[ChannelSnapshot], deleted_channels: list[str],
                     origin_ms: int) -> list[OutgoingRecord]:
    """Snapshot records, and a tombstone (null value) for each deleted channel key."""
    out = [
        OutgoingRecord(topics.positions, snap.key,
                       codec.encode(POSITION_SCHEMA, snap, topics.positions), origin_ms)
        for snap in positions
    ]
    out.extend(
        OutgoingRecord(topics.channels, snap.key,
                       codec.encode(CHANNEL_SCHEMA, snap, topics.channels), origin_ms)
        for snap in channels
    )
    if deleted_channels:
        out.extend(OutgoingRecord(topics.channels, key, None, origin_ms)
                   for key in deleted_channels)
        CHANNEL_TOMBSTONES.inc(len(deleted_channels))
    POSITION_SNAPSHOTS.inc(len(positions))
    CHANNEL_SNAPSHOTS.inc(len(channels))
    return out


class SnapshotOutput:
    """The reference publisher, its snapshots made records by ``encode``."""

    def __init__(self, encode: Encoder) -> None:
        self.encode = encode

    def new_publisher(self) -> Publisher:
        return SnapshotPublisher()

    def adopt(self, publisher: Publisher) -> Publisher:
        """A publisher restored from a recovery snapshot, in this output's implementation."""
        return publisher

    def loads(self, snapshot: bytes | memoryview) -> Any:
        """Unpickle a recovery snapshot's state."""
        return pickle.loads(snapshot)

    def publish(self, publisher: Publisher, inventory: SkuInventory, touched: Iterable[str],
                rules: Rules, now_ms: int, next_version: NextVersion,
                forced: Collection[str], origin_ms: int) -> list[OutgoingRecord]:
        """The records of :meth:`SnapshotPublisher.publish` (computed at ``now_ms``)."""
        assert isinstance(publisher, SnapshotPublisher)
        positions, channels = publisher.publish(inventory, touched, rules, now_ms, now_ms,
                                                next_version, forced)
        return self.encode(positions, channels, [], origin_ms)

    def republish(self, publisher: Publisher, inventory: SkuInventory, rules: Rules,
                  now_ms: int, next_version: NextVersion, everything: bool, origin_ms: int
                  ) -> tuple[Publisher, list[OutgoingRecord]]:
        """:meth:`SnapshotPublisher.republish`'s records, and the publisher to keep."""
        reference = publisher if isinstance(publisher, SnapshotPublisher) else \
            publisher.to_reference()  # type: ignore[attr-defined]
        result = reference.republish(inventory, rules, now_ms, now_ms, next_version,
                                     everything=everything)
        records = self.encode(result.positions, result.channels, result.deleted_channels,
                              origin_ms)
        return self.adopt(reference), records


class CompiledSnapshotOutput(SnapshotOutput):
    """The compiled publisher, encoding as :func:`encode_snapshots` does."""

    def __init__(self, codec: Codec, topics: TopicNames) -> None:
        super().__init__(partial(encode_snapshots, codec, topics))
        self._codec = codec
        self._topics = topics
        self._targets: Any = None
        """The topics with their value headers, made at the first publish (a registry
        header registers the schema, as the codec's first encode would)."""

    def new_publisher(self) -> Publisher:
        publisher: Publisher = _native.CompiledPublisher()
        return publisher

    def adopt(self, publisher: Publisher) -> Publisher:
        if isinstance(publisher, SnapshotPublisher):
            adopted: Publisher = _native.CompiledPublisher.from_reference(publisher)
            return adopted
        return publisher

    def loads(self, snapshot: bytes | memoryview) -> Any:
        """Unpickle a recovery snapshot's state with its publisher built compiled, straight
        from the bytes the reference's ``_publisher_blob`` would read: a restart
        loads every SKU an event touches, and making the reference publisher first and
        converting it was half of that."""
        return _CompiledRestore(io.BytesIO(snapshot)).load()

    def publish(self, publisher: Publisher, inventory: SkuInventory, touched: Iterable[str],
                rules: Rules, now_ms: int, next_version: NextVersion,
                forced: Collection[str], origin_ms: int) -> list[OutgoingRecord]:
        targets = self._targets
        if targets is None:
            topics, codec = self._topics, self._codec
            targets = self._targets = _native.SnapshotTopics(
                OutgoingRecord, topics.positions, topics.channels,
                codec.header(POSITION_SCHEMA, topics.positions),
                codec.header(CHANNEL_SCHEMA, topics.channels))
        records, positions, channels = publisher.publish_records(  # type: ignore[attr-defined]
            inventory, touched, rules, now_ms, now_ms, next_version, forced, origin_ms,
            targets)
        if positions:
            POSITION_SNAPSHOTS.inc(positions)
        if channels:
            CHANNEL_SNAPSHOTS.inc(channels)
        out: list[OutgoingRecord] = records
        return out


_COMPILED_PUBLISHERS = {"_publisher_blob": "from_blob", "_publisher_records": "from_records"}
"""The reference's publisher constructors in a snapshot -> the compiled ones."""


class _CompiledRestore(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "availability_domain.snapshots" and name in _COMPILED_PUBLISHERS:
            return getattr(_native.CompiledPublisher, _COMPILED_PUBLISHERS[name])
        return super().find_class(module, name)


def snapshot_output(codec: Codec, topics: TopicNames,
                    implementation: Implementation = IMPLEMENTATION) -> SnapshotOutput:
    """The engine's output: compiled unless the extension is missing or not wanted."""
    if implementation == "compiled" and _native is not None:
        return CompiledSnapshotOutput(codec, topics)
    return SnapshotOutput(partial(encode_snapshots, codec, topics))
