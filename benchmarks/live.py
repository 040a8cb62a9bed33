"""Real-time production and per-event produce-to-snapshot latency (freshness, recovery).

Every live event gets ``occurred_at`` = the wall clock (ms) when it is handed to the
producer. A position snapshot's ``as_of`` is the newest occurred_at folded into that
position, so the first snapshot of an event's key with ``as_of >= occurred_at`` is the
first one that reflects it; its broker append time (LogAppendTime) is when the event
became visible on the topic. Latency = append time - occurred_at, per event, with no
consumer in the loop while the system runs (the output is read afterwards).

Duplicates keep the occurred_at of their first send (they are the same event) and are
not measured: they change nothing, so no snapshot answers them. The live workload has
no late events: a late event would not move as_of and could not be matched.
"""

from __future__ import annotations

import itertools
import time
import uuid
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from hdrh.histogram import HdrHistogram

from availability_contracts.codec import Codec
from availability_contracts.keys import position_key
from availability_contracts.schemas import POSITION_SCHEMA
from availability_domain.events import EventType, InventoryEvent
from availability_kafka.topic_reader import watermarks
from benchmarks.avro_events import encode_event
from benchmarks.kafka_util import Delivery, client_settings, read_records

SENTINEL_SKU = "BENCH-SENTINEL"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Phase:
    """Events produced in one phase: key and occurred_at of each measured event."""

    name: str
    target_rate: float
    keys: list[str] = field(default_factory=list)
    times: array = field(default_factory=lambda: array("q"))
    started_ms: int = 0
    ended_ms: int = 0
    produced: int = 0
    duplicates: int = 0

    @property
    def achieved_rate(self) -> float:
        seconds = (self.ended_ms - self.started_ms) / 1000
        return self.produced / seconds if seconds > 0 else 0.0


class LiveProducer:
    """Produces events at a target rate, stamping occurred_at (and expires_at) live."""

    def __init__(self, producer: Any, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.delivery = Delivery()
        self.sent = 0
        self._stamped: dict[str, int] = {}
        self._order: list[str] = []

    def _stamp(self, event: InventoryEvent, now: int) -> tuple[InventoryEvent, bool]:
        """(event with live times, is_duplicate)."""
        first = self._stamped.get(event.event_id)
        if first is not None:
            return self._restamp(event, first), True
        self._stamped[event.event_id] = now
        self._order.append(event.event_id)
        if len(self._order) > 20_000:
            for old in self._order[:10_000]:
                self._stamped.pop(old, None)
            del self._order[:10_000]
        return self._restamp(event, now), False

    @staticmethod
    def _restamp(event: InventoryEvent, now: int) -> InventoryEvent:
        expires_at = event.expires_at
        if expires_at is not None:
            expires_at = now + (expires_at - event.occurred_at)
        return event._replace(occurred_at=now, expires_at=expires_at)

    def run(self, events: Iterable[InventoryEvent], rate: float, seconds: float,
            phase: Phase | None = None) -> Phase:
        """Produce ``rate * seconds`` events paced evenly; record them in ``phase``."""
        phase = phase or Phase("", rate)
        total = int(rate * seconds)
        source: Iterator[InventoryEvent] = iter(events)
        produce = self.producer.produce
        poll = self.producer.poll
        topic = self.topic
        delivery = self.delivery
        keys_append = phase.keys.append
        times_append = phase.times.append
        sent = 0
        started = time.perf_counter()
        phase.started_ms = phase.started_ms or wall_ms()
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            if due <= sent:
                time.sleep(0.0005)
                continue
            now = wall_ms()
            for event in itertools.islice(source, due - sent):
                live, duplicate = self._stamp(event, now)
                key = position_key(live.sku, live.location_id)
                while True:
                    try:
                        produce(topic, encode_event(live), key, on_delivery=delivery)
                        break
                    except BufferError:
                        poll(0.01)
                if duplicate:
                    phase.duplicates += 1
                else:
                    keys_append(key)
                    times_append(now)
            phase.produced += due - sent
            sent = due
            poll(0)
        phase.ended_ms = wall_ms()
        self.sent += sent
        return phase

    def confirm(self) -> None:
        self.delivery.check(self.producer, self.sent)

    def caught_up(self, brokers: str, positions_topic: str, timeout_s: float) -> int | None:
        """Wait until the system has handled everything produced so far.

        Returns the append time (ms) of the last sentinel snapshot, None on timeout.

        Output going quiet is no proof (the engine pauses for its epoch snapshots, expiry
        timers trickle on), so one sentinel COUNT goes to every events partition, after
        everything produced there; a system reads a partition in order, so once each
        sentinel position's snapshot is out, everything before it has been folded.
        """
        consumer = Consumer(client_settings(brokers, {"group.id": f"bench-{uuid.uuid4()}",
                                                      "enable.auto.commit": False}))
        try:
            partitions = sorted(
                consumer.list_topics(positions_topic, timeout=30).topics[positions_topic]
                .partitions)
            consumer.assign([TopicPartition(positions_topic, p,
                                            watermarks(consumer, positions_topic, p)[1])
                             for p in partitions])
            stamp = wall_ms()
            events = sorted(self.producer.list_topics(self.topic, timeout=30)
                            .topics[self.topic].partitions)
            pending = set()
            last_ms = 0
            delivery = Delivery()
            for partition in events:
                location = f"P{partition}"
                event = InventoryEvent(f"sentinel-{uuid.uuid4().hex}", EventType.COUNT, stamp,
                                       "bench", SENTINEL_SKU, location, stamp % 1000)
                self.producer.produce(self.topic, encode_event(event),
                                      position_key(SENTINEL_SKU, location), partition=partition,
                                      on_delivery=delivery)
                pending.add(position_key(SENTINEL_SKU, location).encode())
            delivery.check(self.producer, len(events), timeout=60)
            codec = Codec()
            prefix = f"{SENTINEL_SKU}|".encode()
            deadline = time.monotonic() + timeout_s
            while pending and time.monotonic() < deadline:
                for message in consumer.consume(10_000, 0.2):
                    key = message.key()
                    if (message.error() is None and key is not None and key.startswith(prefix)
                            and key in pending
                            and codec.decode(POSITION_SCHEMA, message.value())["as_of"] >= stamp):
                        pending.discard(key)
                        last_ms = max(last_ms, message.timestamp()[1])
            return None if pending else last_ms
        finally:
            consumer.close()


@dataclass
class Snapshots:
    """Per position key: as_of and append time of each snapshot, in topic order."""

    as_of: dict[str, array]
    appended: dict[str, array]
    records: int


def read_snapshots(brokers: str, topic: str, codec: Codec | None = None) -> Snapshots:
    codec = codec or Codec()
    decode = codec.decode
    as_of: dict[str, array] = {}
    appended: dict[str, array] = {}
    records = 0
    for key, value, stamp in read_records(brokers, topic):
        record = decode(POSITION_SCHEMA, value)
        entry = as_of.get(key)
        if entry is None:
            entry = as_of[key] = array("q")
            appended[key] = array("q")
        entry.append(record["as_of"])
        appended[key].append(stamp)
        records += 1
    return Snapshots(as_of, appended, records)


def reflect_times(phase: Phase, snapshots: Snapshots) -> array:
    """Append time of the first snapshot reflecting each event of ``phase`` (-1: never)."""
    out = array("q", [-1]) * len(phase.keys)
    running: dict[str, int] = {}
    for index, (key, occurred) in enumerate(zip(phase.keys, phase.times, strict=True)):
        as_of = snapshots.as_of.get(key)
        if as_of is None:
            continue
        # as_of is non-decreasing per key: the first snapshot with as_of >= occurred
        position = _first_at_least(as_of, occurred, running.get(key, 0))
        running[key] = position
        if position < len(as_of):
            out[index] = snapshots.appended[key][position]
    return out


def _first_at_least(values: array, target: int, start: int) -> int:
    if start < len(values) and values[start] >= target:
        return start
    low, high = start, len(values)
    while low < high:
        middle = (low + high) // 2
        if values[middle] < target:
            low = middle + 1
        else:
            high = middle
    return low


@dataclass
class LatencyStats:
    count: int
    unmatched: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    mean_ms: float | None


def latency_stats(phase: Phase, reflected: array) -> LatencyStats:
    """HDR histogram (1 ms .. 1 h, 3 significant digits) of reflect - occurred."""
    histogram = HdrHistogram(1, 3_600_000, 3)
    unmatched = 0
    for occurred, seen in zip(phase.times, reflected, strict=True):
        if seen < 0:
            unmatched += 1
            continue
        histogram.record_value(max(1, seen - occurred))
    count = histogram.get_total_count()
    if not count:
        return LatencyStats(0, unmatched, None, None, None, None, None, None)
    return LatencyStats(
        count, unmatched,
        float(histogram.get_value_at_percentile(50)),
        float(histogram.get_value_at_percentile(90)),
        float(histogram.get_value_at_percentile(99)),
        float(histogram.get_value_at_percentile(99.9)),
        float(histogram.get_max_value()),
        float(histogram.get_mean_value()))


def lag_series(phases: list[Phase], reflected: list[array], start_ms: int, end_ms: int,
               step_ms: int = 100) -> tuple[list[float], list[int]]:
    """(seconds since start_ms, events produced but not yet on the topic) every step."""
    produced = sorted(itertools.chain.from_iterable(p.times for p in phases))
    seen = sorted(t for r in reflected for t in r if t >= 0)
    xs: list[float] = []
    ys: list[int] = []
    for t in range(start_ms, end_ms + step_ms, step_ms):
        xs.append((t - start_ms) / 1000)
        lag = bisect_right(produced, t) - bisect_right(seen, t)
        ys.append(max(0, lag))
    return xs, ys


def drain_after(phases: list[Phase], reflected: list[array], cutoff_ms: int
                ) -> tuple[float | None, int]:
    """Seconds after ``cutoff_ms`` until every event produced by then was on the topic.

    Also returns how many of those were never reflected (then the time is None).
    """
    latest = cutoff_ms
    never = 0
    for phase, seen in zip(phases, reflected, strict=True):
        for occurred, at in zip(phase.times, seen, strict=True):
            if occurred > cutoff_ms:
                continue
            if at < 0:
                never += 1
            elif at > latest:
                latest = at
    return (None if never else (latest - cutoff_ms) / 1000), never


def interleave(base: Iterator[InventoryEvent], extra: Iterator[InventoryEvent], factor: int
               ) -> Iterator[InventoryEvent]:
    """One base event, then ``factor - 1`` extra ones, repeated: a ``factor``x stream."""
    while True:
        yield next(base)
        for _ in range(factor - 1):
            yield next(extra)
