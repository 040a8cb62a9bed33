"""The read replica: tails the compacted snapshot topics into the local store.

A background thread consumes ``availability.positions`` and ``availability.channels``
with manual partition assignment (it never joins a consumer group). Each polled batch
becomes one atomic store write holding the new values *and* the next offset of every
partition it read, so a restart resumes from the stored offsets and never re-reads the
topics from the beginning.

So that operators' lag tools see the replica, the offsets just written are also
*reported* to the consumer group ``availability-api.<replica id>`` (the id is kept in
the data dir, so a restarted replica keeps its group): asynchronous commits, at most
one per :data:`COMMIT_INTERVAL_S`, never read back. The store stays the truth; a
failed commit is logged and changes nothing else.

Rules applied per key: a snapshot whose version is not newer than the one held (in the
store or earlier in the same batch) is dropped; a tombstone deletes the key; the
first snapshot of a channel records whether it is pooled or per-location.

``lag`` is the sum over partitions of (topic end offset - stored offset), from the
end offsets the consumer learns with every fetch. ``caught_up`` is set once every
partition present at startup has reached the end offset it had then: the server turns
SERVING at that moment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition

from availability_api import frames
from availability_api.metrics import PROGRESS_COMMIT_FAILURES
from availability_api.store import ReplicaStore, StoreChanges, StoreError, TopicPartitionKey
from availability_contracts.codec import Codec
from availability_contracts.keys import channel_key, position_key
from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA
from availability_contracts.topics import TopicNames
from availability_kafka.config import KafkaConnection

log = logging.getLogger("availability.api.replica")

ChangeListener = Callable[[list[tuple[str, bytes]]], None]
Pending = dict[str, tuple[bytes | None, int, bool]]
"""Key -> (frame or None for a tombstone, version, a tombstone came first in the batch)."""

CONSUMER_CONFIG: dict[str, Any] = {
    "enable.partition.eof": True,  # EOF offsets step over compaction gaps
    "allow.auto.create.topics": False,
    "fetch.wait.max.ms": 100,  # idle fetches return sooner: fresher lag and EOF offsets
}
"""Client defaults; a ``--kafka-config`` file may override them."""

_FIXED_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,  # the replica commits its progress report itself
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # the never-joined group's session: how long a commit waits for an unreachable
    # coordinator, so close() does not hang on a report (45 s by default)
    "session.timeout.ms": 2000,
}
"""Applied over every other setting (``group.id`` too: :func:`replica_group_id`)."""

GROUP_PREFIX = "availability-api."
COMMIT_INTERVAL_S = 1.0
"""At most one progress commit per this many seconds."""
COMMIT_REFRESH_S = 60.0
"""Unchanged offsets are committed again this often, so the broker does not expire them
(``offsets.retention.minutes``) while the topics are quiet."""
FAILURE_LOG_INTERVAL_S = 60.0


def replica_group_id(replica_id: str) -> str:
    """The consumer group a replica reports to: ``availability-api.<replica id>``."""
    return f"{GROUP_PREFIX}{replica_id}"


class Replica:
    """Applies snapshot records to a :class:`ReplicaStore` on its own thread."""

    def __init__(self, store: ReplicaStore, brokers: KafkaConnection | str, topics: TopicNames,
                 codec: Codec | None = None, *, batch_size: int = 5000,
                 poll_timeout: float = 0.05, metadata_interval: float = 10.0) -> None:
        self.store = store
        self.brokers = brokers
        self._where = KafkaConnection.of(brokers).describe()  # for logs: secrets masked
        self.topics = topics
        self.codec = codec or Codec()
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.metadata_interval = metadata_interval
        self.caught_up = threading.Event()
        self.stopped = threading.Event()
        self.failure: BaseException | None = None
        self.channel_kinds: dict[str, bool] = store.channel_kinds()
        self.lag = 0
        self.records_read = 0  # snapshot records consumed since this process started
        # read == applied + skipped + undecodable; skipped: not newer than the value held,
        # or superseded by a newer record of the same key in the same batch
        self.records_applied = 0
        self.records_skipped = 0
        self.records_undecodable = 0
        self.on_change: ChangeListener = lambda changes: None
        self.on_caught_up: Callable[[], None] = lambda: None
        self.on_stopped: Callable[[BaseException | None], None] = lambda failure: None
        self.group_id = replica_group_id(store.replica_id)
        """Consumer group the progress is reported to (a report: the store is the truth)."""
        self.commit_failures = 0
        self._committed: dict[TopicPartitionKey, int] = {}
        self._commit_due = 0.0
        self._committed_at = 0.0
        self._commit_in_flight_since: float | None = None
        self._commit_failing = False
        self._failure_logged_at = float("-inf")
        self._offsets: dict[TopicPartitionKey, int] = store.offsets()
        self._targets: dict[TopicPartitionKey, int] = {}
        self._high: dict[TopicPartitionKey, int] = {}
        self._assigned: set[TopicPartitionKey] = set()
        self._topics_present = False
        self._missing: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0

    # lifecycle -------------------------------------------------------------------

    def start(self) -> Replica:
        self._started_at = time.monotonic()
        log.info("replica %s reports its progress to consumer group %s (the offsets that "
                 "count are in %s)", self.store.replica_id, self.group_id, self.store.path)
        self._thread = threading.Thread(target=self._run, name="replica", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand, then close the consumer; the store stays open."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stored_offsets(self) -> dict[TopicPartitionKey, int]:
        return dict(self._offsets)

    def _run(self) -> None:
        try:
            consumer = Consumer(KafkaConnection.of(self.brokers).client(CONSUMER_CONFIG)
                                | _FIXED_CONFIG
                                | {"group.id": self.group_id, "on_commit": self._on_commit})
            try:
                self._consume(consumer)
                self._report_progress(consumer, final=True)
            finally:
                consumer.close()  # waits for a commit in flight
        except StoreError as exc:  # full disk, read-only volume: the text says which
            self.failure = exc
            log.error("replica stopped: %s", exc)
        except BaseException as exc:
            self.failure = exc
            log.exception("replica stopped on an error")
        finally:
            self.stopped.set()
            self.on_stopped(self.failure)

    def _consume(self, consumer: Consumer) -> None:
        next_metadata = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_metadata:
                complete = self._assign_new_partitions(consumer)
                next_metadata = time.monotonic() + (self.metadata_interval if complete else 1.0)
            if not self._assigned:
                self._stop.wait(0.2)
                continue
            messages = consumer.consume(self.batch_size, self.poll_timeout)
            if messages:
                self._apply(messages)
            self._update_lag(consumer)
            self._report_progress(consumer)
            if not self.caught_up.is_set() and self._startup_ends_reached():
                self.caught_up.set()
                log.info("caught up in %.1fs: %d records applied, lag %d",
                         time.monotonic() - self._started_at, self.records_applied, self.lag)
                self.on_caught_up()

    # progress report -------------------------------------------------------------

    def _report_progress(self, consumer: Consumer, final: bool = False) -> None:
        """Commit the stored offsets to :attr:`group_id`, asynchronously, when they moved
        (at most every :data:`COMMIT_INTERVAL_S`) or are due a refresh; never raises."""
        now = time.monotonic()
        if not final and now < self._commit_due:
            return
        self._commit_due = now + COMMIT_INTERVAL_S
        if (not final and self._commit_in_flight_since is not None
                and now - self._commit_in_flight_since < COMMIT_REFRESH_S):
            return  # the previous one is still on its way (coordinator slow or down)
        offsets = {key: offset for key, offset in self._offsets.items() if offset >= 0}
        if not offsets or (offsets == self._committed
                           and now - self._committed_at < COMMIT_REFRESH_S):
            return
        try:
            consumer.commit(offsets=[KafkaPartition(topic, partition, offset)
                                     for (topic, partition), offset in offsets.items()],
                            asynchronous=True)
        except (KafkaException, RuntimeError) as exc:
            self._commit_failed(str(exc))
            return
        self._commit_in_flight_since = now

    def _on_commit(self, error: KafkaError | None, partitions: list[KafkaPartition]) -> None:
        """librdkafka's ``on_commit`` callback, served by ``consume`` on the replica thread."""
        self._commit_in_flight_since = None
        failed = [tp for tp in partitions if tp.error is not None]
        if error is not None or failed:
            self._commit_failed(str(error if error is not None else failed[0].error))
        for tp in partitions:
            if tp.error is None:
                self._committed[(tp.topic, tp.partition)] = tp.offset
        if error is None and not failed:
            self._committed_at = time.monotonic()
            if self._commit_failing:
                self._commit_failing = False
                log.info("progress committed to consumer group %s again", self.group_id)

    def _commit_failed(self, reason: str) -> None:
        self.commit_failures += 1
        PROGRESS_COMMIT_FAILURES.inc()
        self._commit_failing = True
        now = time.monotonic()
        if now - self._failure_logged_at >= FAILURE_LOG_INTERVAL_S:
            self._failure_logged_at = now
            log.warning("cannot commit progress to consumer group %s (a report for lag "
                        "tools only; the store keeps the offsets): %s (%d failures so far)",
                        self.group_id, reason, self.commit_failures)

    # partitions ------------------------------------------------------------------

    def _assign_new_partitions(self, consumer: Consumer) -> bool:
        """Assign partitions not yet read; True when both topics exist."""
        complete = True
        fresh: list[KafkaPartition] = []
        for topic in (self.topics.positions, self.topics.channels):
            try:
                partitions = self._new_partitions(consumer, topic)
            except KafkaException as exc:  # broker unreachable: keep trying, NOT_SERVING
                log.warning("cannot read metadata of %s from %s: %s", topic, self._where,
                            exc)
                partitions = None
            if partitions is None:
                complete = False
                continue
            for key in partitions:
                fresh.append(KafkaPartition(*key, self._offsets.get(key, OFFSET_BEGINNING)))
                self._assigned.add(key)
        if fresh:
            consumer.incremental_assign(fresh)
            log.info("reading %s", ", ".join(
                f"{tp.topic}[{tp.partition}]@{self._offsets.get((tp.topic, tp.partition), 0)}"
                for tp in fresh))
        self._topics_present = complete
        return complete

    def _new_partitions(self, consumer: Consumer, topic: str
                        ) -> list[TopicPartitionKey] | None:
        """Partitions of ``topic`` not assigned yet (None: the topic does not exist).

        Before the first catch-up, each one's current end offset becomes a target.
        """
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            if topic not in self._missing:  # say it once, not every retry
                log.warning("waiting for topic %s on %s", topic, self._where)
                self._missing.add(topic)
            return None
        self._missing.discard(topic)
        fresh = [(topic, p) for p in sorted(metadata.partitions)
                 if (topic, p) not in self._assigned]
        if not self.caught_up.is_set():
            for key in fresh:
                _, high = consumer.get_watermark_offsets(KafkaPartition(*key), timeout=10)
                self._targets[key] = self._high[key] = high
        return fresh

    def _startup_ends_reached(self) -> bool:
        """Both topics exist and every startup partition reached its end offset then."""
        return self._topics_present and all(
            self._offsets.get(key, 0) >= end for key, end in self._targets.items())

    def _update_lag(self, consumer: Consumer) -> None:
        lag = 0
        for topic, partition in self._assigned:
            key = (topic, partition)
            _, high = consumer.get_watermark_offsets(KafkaPartition(topic, partition),
                                                     cached=True)
            if high is not None and high >= 0:
                self._high[key] = high
            lag += max(0, self._high.get(key, 0) - self._offsets.get(key, 0))
        self.lag = lag

    # applying records ------------------------------------------------------------

    def _apply(self, messages: Sequence[Message]) -> None:
        changes = StoreChanges()
        channels: Pending = {}
        positions: Pending = {}
        for message in messages:
            error = message.error()
            key: TopicPartitionKey = (message.topic(), message.partition())
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    end = max(message.offset(), changes.offsets.get(key, 0))
                    if end != self._offsets.get(key):
                        changes.offsets[key] = end
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer: %s", error)
                continue
            self.records_read += 1
            changes.offsets[key] = message.offset() + 1
            if message.topic() == self.topics.channels:
                self._fold_channel(message, channels, changes)
            else:
                self._fold_position(message, positions)
        published: list[tuple[str, bytes]] = []
        self._keep_newer(channels, self.store.channel_frames, frames.channel_frame_version,
                         changes.channels)
        self._keep_newer(positions, self.store.position_frames_by_key,
                         frames.position_frame_version, changes.positions)
        for channel_key_, frame in changes.channels.items():
            published.append((channel_key_, frame if frame is not None
                              else frames.missing_frame_for_key(channel_key_)))
        if not changes:
            return
        self.store.write(changes)
        self._offsets.update(changes.offsets)
        for channel, per_location in changes.kinds.items():
            self.channel_kinds[channel] = per_location
        self.records_applied += len(changes.channels) + len(changes.positions)
        if published:
            self.on_change(published)

    def _decode(self, schema: str, message: Message) -> dict[str, Any] | None:
        try:
            return self.codec.decode(schema, message.value())
        except ValueError as exc:
            self.records_undecodable += 1
            log.error("skipped undecodable snapshot %s[%d]@%d: %s", message.topic(),
                      message.partition(), message.offset(), exc)
            return None

    def _tombstone_key(self, message: Message) -> str | None:
        raw = message.key()
        if not raw:
            log.error("skipped tombstone without a key at %s[%d]@%d", message.topic(),
                      message.partition(), message.offset())
            return None
        return raw.decode("utf-8", errors="replace")

    def _fold_channel(self, message: Message, pending: Pending, changes: StoreChanges
                      ) -> None:
        if message.value() is None:
            key = self._tombstone_key(message)
            if key is not None:
                self._supersede(pending, key, None, 0)
            return
        record = self._decode(CHANNEL_SCHEMA, message)
        if record is None:
            return
        key = channel_key(record["channel"], record["sku"], record["location_id"])
        if not self._newer(pending, key, record["version"]):
            return
        self._supersede(pending, key, frames.channel_frame(record), record["version"])
        channel = record["channel"]
        if channel not in self.channel_kinds and channel not in changes.kinds:
            changes.kinds[channel] = record["location_id"] is not None

    def _fold_position(self, message: Message, pending: Pending) -> None:
        if message.value() is None:
            key = self._tombstone_key(message)
            if key is not None:
                self._supersede(pending, key, None, 0)
            return
        record = self._decode(POSITION_SCHEMA, message)
        if record is None:
            return
        key = position_key(record["sku"], record["location_id"])
        if self._newer(pending, key, record["version"]):
            self._supersede(pending, key, frames.position_frame(record), record["version"])

    def _newer(self, pending: Pending, key: str, version: int) -> bool:
        held = pending.get(key)
        if held is not None and held[0] is not None and held[1] >= version:
            self.records_skipped += 1
            return False
        return True

    def _supersede(self, pending: Pending, key: str, frame: bytes | None,
                   version: int) -> None:
        """Make ``frame`` the pending value of ``key``; a replaced one counts as skipped.

        A record after a tombstone of the same batch follows a deletion, as it would in
        the next batch: it is not compared with the stored value.
        """
        held = pending.get(key)
        if held is not None:
            self.records_skipped += 1
        pending[key] = (frame, version, frame is None or (held is not None and held[2]))

    def _keep_newer(self, pending: Pending, read: Callable[[Sequence[str]], list[bytes | None]],
                    version_of: Callable[[bytes], int],
                    out: dict[str, bytes | None]) -> None:
        """Move into ``out`` the pending values newer than the stored ones."""
        keys = [key for key, (frame, _, cleared) in pending.items()
                if frame is not None and not cleared]
        stored = dict(zip(keys, read(keys), strict=True)) if keys else {}
        for key, (frame, version, _) in pending.items():
            held = stored.get(key)
            if frame is not None and held is not None and version_of(held) >= version:
                self.records_skipped += 1
                continue
            out[key] = frame
