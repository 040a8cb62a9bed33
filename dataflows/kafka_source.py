"""Reads `inventory.events` partitions as raw records; offsets live in Bytewax recovery.

Our own source instead of bytewax's KafkaSource: it hands on light tuples rather than
a dataclass per message and skips the per-second statistics parsing. Each Kafka
partition is one Bytewax partition, so resume offsets are part of the recovery
snapshot; the consumers never join a group (``assign()`` only).

The offsets in the recovery snapshots are the truth. So that operators' tools
(``kafka-consumer-groups.sh``, Burrow, lag exporters) see the engine's lag, each
partition also *reports* its resume offset to the consumer group
``availability-engine.<flow_id>`` at every snapshot: an asynchronous commit from an
assign-only ("simple") consumer, never read back. The committed offset is where the
engine would resume, so the lag shown is at most one epoch behind; a commit that fails
is logged and changes nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from availability_kafka.config import KafkaConnection
from dataflows.metrics import INPUT_LAG, PROGRESS_COMMIT_FAILURES
from dataflows.settings import DEFAULT_BATCH_SIZE

log = logging.getLogger("availability.engine.source")

STOP_REQUESTED = threading.Event()
"""Set by the engine's signal handler: partitions end, so the flow drains and exits."""

GROUP_PREFIX = "availability-engine."
COMMIT_REFRESH_S = 60.0
"""An unchanged offset is committed again this often, so the broker does not expire it
(``offsets.retention.minutes``) while the engine is idle."""
FAILURE_LOG_INTERVAL_S = 60.0
COMMIT_WAIT_MS = 2000
"""``session.timeout.ms`` of the never-joined group: how long librdkafka keeps a commit
waiting for an unreachable coordinator, so ``close()`` does not hang on a report
(45 s by default)."""


def engine_group_id(flow_id: str) -> str:
    """The consumer group the engine reports its progress to: ``availability-engine.<flow_id>``."""
    return f"{GROUP_PREFIX}{flow_id}"


class _GroupReport:
    """Reports one partition's resume offset to a consumer group; never raises.

    At most one commit is in flight (its result arrives through ``on_commit``, served by
    the consumer's own ``consume`` calls); a newer offset waits for the next snapshot.
    """

    def __init__(self, group_id: str, topic: str, partition: int) -> None:
        self.group_id = group_id
        self._topic = topic
        self._partition = partition
        self._in_flight_since: float | None = None
        self._committed = -1
        self._committed_at = 0.0
        self._failing = False
        self._failure_logged_at = float("-inf")
        self.failures = 0

    def commit(self, consumer: Consumer, offset: int, final: bool = False) -> None:
        now = time.monotonic()
        if offset < 0:
            return
        if (not final and self._in_flight_since is not None
                and now - self._in_flight_since < COMMIT_REFRESH_S):
            return  # the previous one is still on its way (coordinator slow or down)
        if offset == self._committed and now - self._committed_at < COMMIT_REFRESH_S:
            return
        try:
            consumer.commit(offsets=[TopicPartition(self._topic, self._partition, offset)],
                            asynchronous=True)
        except (KafkaException, RuntimeError) as exc:  # closed consumer, local queue full
            self._failed(str(exc))
            return
        self._in_flight_since = now

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's ``on_commit`` callback (consumer thread)."""
        self._in_flight_since = None
        problem = error if error is not None else next(
            (tp.error for tp in partitions if tp.error is not None), None)
        if problem is not None:
            self._failed(str(problem))
            return
        for tp in partitions:
            if tp.partition == self._partition and tp.topic == self._topic:
                self._committed = tp.offset
                self._committed_at = time.monotonic()
        if self._failing:
            self._failing = False
            log.info("progress of %s[%d] is committed to consumer group %s again",
                     self._topic, self._partition, self.group_id)

    def _failed(self, reason: str) -> None:
        self.failures += 1
        PROGRESS_COMMIT_FAILURES.inc()
        self._failing = True
        now = time.monotonic()
        if now - self._failure_logged_at >= FAILURE_LOG_INTERVAL_S:
            self._failure_logged_at = now
            log.warning("cannot commit the progress of %s[%d] to consumer group %s (a report "
                        "for lag tools only; the recovery snapshots keep the offsets): %s "
                        "(%d failures so far)", self._topic, self._partition, self.group_id,
                        reason, self.failures)


class SourceRecord(NamedTuple):
    """One consumed message and where it came from (for the DLQ)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    replayed: bool = True
    """Whether an earlier run may have read it: it was already in the partition when this
    run started. A run that crashed can only have published from such records, so a
    restored SKU republishes the keys they name (see :mod:`dataflows.sku_logic`).
    Unknown counts as True."""


REPLAY_END_TIMEOUT_S = 10.0
"""How long a reader asks the broker for its partition's end before assuming that
everything it reads may have been read before (correct, only more republishing)."""


class _PartitionReader(StatefulSourcePartition[SourceRecord, int]):
    def __init__(self, config: dict[str, Any], topic: str, partition: int, offset: int,
                 batch_size: int) -> None:
        """``config["group.id"]`` is the group the resume offsets are reported to."""
        self._report = _GroupReport(config["group.id"], topic, partition)
        self._consumer = Consumer({**config, "on_commit": self._report.on_commit})
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic = topic
        self._partition = partition
        self._next_offset = offset
        self._batch_size = batch_size
        self._replay_end = self._replay_bound(offset)
        """Offsets below this were in the partition before this run: possibly read."""
        self._lag_gauge = INPUT_LAG.labels(str(partition))
        self._lag_due = 0.0
        self._snapshotted = -1
        if offset >= 0:  # restored from a snapshot: report where this run resumes
            self._report.commit(self._consumer, offset)

    def _replay_bound(self, resume_offset: int) -> int | None:
        """The partition's end offset now (None: unknown); warns when retention already
        deleted records after the resume offset, which no restart can replay."""
        topic, partition = self._topic, self._partition
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=REPLAY_END_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("cannot read the end of %s[%d] (%s): every record read will count "
                        "as possibly read before", topic, partition, exc)
            return None
        if resume_offset >= 0 and low is not None and low > resume_offset:
            log.warning("%s[%d]: offsets %d-%d after the recovery snapshot were deleted by "
                        "retention before they could be replayed; the state lacks those "
                        "events and consumers may hold numbers from them: rebuild from a "
                        "complete topic (docs/operations.md, section 3)",
                        topic, partition, resume_offset, low - 1)
        return high if high is not None and high >= 0 else None

    @property
    def group_id(self) -> str:
        return self._report.group_id

    def next_batch(self) -> list[SourceRecord]:
        if STOP_REQUESTED.is_set():
            raise StopIteration
        messages = self._consumer.consume(self._batch_size, 0.001)
        now = time.monotonic()
        if now >= self._lag_due:
            self._lag_due = now + 1.0
            self._report_lag()
        if not messages:
            return []
        batch = []
        topic, partition = self._topic, self._partition
        replay_end = self._replay_end
        for message in messages:
            error = message.error()
            if error is not None:
                raise RuntimeError(f"consuming {topic}[{partition}] failed: {error}")
            offset = message.offset()
            batch.append(SourceRecord(topic, partition, offset, message.key(),
                                      message.value(), message.timestamp()[1],
                                      replay_end is None or offset < replay_end))
        self._next_offset = batch[-1].offset + 1
        return batch

    def _report_lag(self) -> None:
        """From the consumer's cached high watermark: no broker round trip."""
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self._topic, self._partition), cached=True)
        if high >= 0 and self._next_offset >= 0:
            self._lag_gauge.set(max(0, high - self._next_offset))

    def snapshot(self) -> int:
        """The resume offset, for the recovery snapshot; also reported to the group."""
        self._snapshotted = self._reported_offset()
        self._report.commit(self._consumer, self._snapshotted)
        return self._next_offset

    def _reported_offset(self) -> int:
        """The resume offset as a number: before the first record of a partition read
        from its beginning, the log start offset the consumer learned (-1 if none yet)."""
        if self._next_offset >= 0:
            return self._next_offset
        low, _ = self._consumer.get_watermark_offsets(
            TopicPartition(self._topic, self._partition), cached=True)
        return low if low is not None and low >= 0 else -1

    def close(self) -> None:
        """The last snapshot's offset is reported even if its commit had to wait; close()
        waits for it (at most :data:`COMMIT_WAIT_MS` with the coordinator away)."""
        self._report.commit(self._consumer, self._snapshotted, final=True)
        self._consumer.close()


class InventoryEventSource(FixedPartitionedSource[SourceRecord, int]):
    """The events topic, one Bytewax partition per Kafka partition.

    ``group_id`` is the consumer group progress is reported to; by default
    ``availability-engine.<flow_id>``, the flow id taken from the input step's id.
    """

    def __init__(self, brokers: KafkaConnection | str, topic: str,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 consumer_config: dict[str, Any] | None = None,
                 group_id: str | None = None) -> None:
        self.brokers = brokers
        self.topic = topic
        self.batch_size = batch_size
        self.consumer_config = consumer_config or {}
        self.group_id = group_id

    def list_parts(self) -> list[str]:
        admin = AdminClient(KafkaConnection.of(self.brokers).client(self.consumer_config))
        metadata = admin.list_topics(self.topic, timeout=30)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            reason = topic.error if topic is not None else "not found"
            raise RuntimeError(f"input topic {self.topic!r} unavailable: {reason}; "
                               "run `availability topics create`")
        return [f"{partition}-{self.topic}" for partition in sorted(topic.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _PartitionReader:
        partition = int(for_part.split("-", 1)[0])
        config = KafkaConnection.of(self.brokers).client({
            "fetch.min.bytes": 1,
            "fetch.wait.max.ms": 10,
            **self.consumer_config,
        }) | {"group.id": self.group_id or engine_group_id(step_id.split(".", 1)[0]),
              "enable.auto.commit": False, "session.timeout.ms": COMMIT_WAIT_MS,
              # a resume offset that retention already deleted restarts at the oldest
              # retained event, never at the end (librdkafka's default would skip them all)
              "auto.offset.reset": "earliest"}
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _PartitionReader(config, self.topic, partition, offset, self.batch_size)
