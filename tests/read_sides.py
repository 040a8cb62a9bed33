"""Read sides for crash and cluster tests: what users read, checked against the fold.

* :class:`NewestVersionConsumer` keeps, per key, the record with the highest version (as
  every marketplace feed must) and remembers every (topic, key, version) -> value seen;
* :class:`RunningApi` runs the real API replica (Kafka consumer, RocksDB, gRPC);
* :class:`ChunkedProducer` publishes events in acknowledged chunks over some seconds, so
  events keep arriving while engines die.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from availability_api.client import ApiError, AvailabilityClient
from availability_api.replica import Replica
from availability_api.server import ApiServer, ApiSettings
from availability_contracts.codec import Codec
from availability_contracts.keys import position_key
from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA
from availability_contracts.topics import TopicNames
from availability_domain.reference import QUANTITIES
from availability_domain.rules import Rules
from availability_kafka.delivery import ConfirmedProducer
from availability_kafka.topic_reader import latest_by_key, watermarks

CHUNK_SECONDS = 0.25

Row = tuple[Any, ...]
Versioned = tuple[int, Row]


# the read sides ---------------------------------------------------------------------


def position_row(record: dict[str, Any]) -> Row:
    return tuple(record[q] for q in QUANTITIES)


def channel_row(record: dict[str, Any]) -> Row:
    """Everything a channel record says except version and computed_at."""
    return (record["ats"], record["as_of"],
            tuple((c["location_id"], c["ats"], c["in_transit"]) for c in record["locations"]))


class NewestVersionConsumer(threading.Thread):
    """A plain consumer of both snapshot topics, from the beginning, as a marketplace
    feed would be written: per key it keeps the value with the highest version and
    drops a record whose version is not greater (a tombstone deletes the key).

    It also keeps the last record per key in offset order (what the compacted topic
    stands for) and every (topic, key, version) -> value it ever saw, and collects the
    (topic, key, version) seen with two different values.
    """

    def __init__(self, brokers: str, topics: TopicNames) -> None:
        super().__init__(name="newest-version-consumer", daemon=True)
        self.brokers = brokers
        self.topics = topics
        self.codec = Codec()
        self.newest: dict[str, dict[str, Versioned]] = {topics.positions: {},
                                                        topics.channels: {}}
        self.latest: dict[str, dict[str, Versioned]] = {topics.positions: {},
                                                        topics.channels: {}}
        self.seen: dict[tuple[str, str, int], Row] = {}
        self.conflicts: dict[tuple[str, str, int], list[Row]] = {}
        self.records = 0
        self.dropped_not_newer = 0
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.failure: BaseException | None = None
        self.lock = threading.Lock()
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def run(self) -> None:
        try:
            consumer = Consumer({
                "bootstrap.servers": self.brokers,
                "group.id": f"newest-version-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            })
            try:
                assignment = []
                for topic in (self.topics.positions, self.topics.channels):
                    metadata = consumer.list_topics(topic, timeout=30).topics[topic]
                    for partition in sorted(metadata.partitions):
                        assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
                        self.next_offsets[(topic, partition)] = 0
                consumer.assign(assignment)
                while not self._halt.is_set():
                    messages = consumer.consume(2000, 0.1)
                    with self.lock:
                        for message in messages:
                            self._take(message)
            finally:
                consumer.close()
        except BaseException as exc:
            self.failure = exc

    def _take(self, message: Any) -> None:
        error = message.error()
        where = (message.topic(), message.partition())
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self.next_offsets[where] = max(self.next_offsets[where], message.offset())
                return
            if error.fatal():
                raise RuntimeError(f"snapshot consumer: {error}")
            return  # transient (a fresh topic's leader election)
        self.records += 1
        self.next_offsets[where] = message.offset() + 1
        topic = message.topic()
        key = message.key().decode()
        newest = self.newest[topic]
        if message.value() is None:
            newest.pop(key, None)
            self.latest[topic].pop(key, None)
            return
        if topic == self.topics.positions:
            record = self.codec.decode(POSITION_SCHEMA, message.value())
            row = position_row(record)
        else:
            record = self.codec.decode(CHANNEL_SCHEMA, message.value())
            row = channel_row(record)
        version = record["version"]
        self.latest[topic][key] = (version, row)
        seen_key = (topic, key, version)
        before = self.seen.get(seen_key)
        if before is None:
            self.seen[seen_key] = row
        elif before != row:
            values = self.conflicts.setdefault(seen_key, [before])
            if row not in values:
                values.append(row)
        held = newest.get(key)
        if held is not None and version <= held[0]:
            self.dropped_not_newer += 1
            return
        newest[key] = (version, row)

    def caught_up(self, ends: dict[tuple[str, int], int]) -> bool:
        with self.lock:
            return all(self.next_offsets.get(where, 0) >= end for where, end in ends.items())


class RunningApi:
    """An :class:`ApiServer` on a private event loop thread, stopped by the fixture."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.server = ApiServer(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-loop",
                                        daemon=True)
        self.running = False

    def start(self) -> RunningApi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(30)
        self.running = True
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def replica(self) -> Replica:
        assert self.server.replica is not None
        return self.server.replica

    def client(self, **options: Any) -> AvailabilityClient:
        return AvailabilityClient(self.target, **options)

    def wait_serving(self, timeout: float = 30) -> None:
        """Until health says SERVING (the replica caught up with the topic ends)."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while client.health() != "SERVING":
                if time.monotonic() > deadline:
                    raise AssertionError(f"replica not SERVING after {timeout}s")
                time.sleep(0.05)

    def wait_caught_up(self, timeout: float = 30) -> None:
        """Until the replica reached the topic ends (no client: works for TLS servers)."""
        if not self.replica.caught_up.wait(timeout):
            raise AssertionError(f"replica not caught up after {timeout}s")

    def caught_up(self, ends: dict[tuple[str, int], int]) -> bool:
        """The replica has stored everything up to ``ends`` (and has no lag)."""
        replica = self.replica
        if replica.failure is not None:
            raise AssertionError(f"API replica failed: {replica.failure!r}")
        offsets = replica.stored_offsets()
        return replica.lag == 0 and all(offsets.get(where, 0) >= end
                                        for where, end in ends.items())

    def stop(self, drain: bool = True) -> None:
        if not self.running:
            return
        self.running = False
        asyncio.run_coroutine_threadsafe(self.server.stop(drain=drain),
                                         self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()



# the write side ---------------------------------------------------------------------


class ChunkedProducer(threading.Thread):
    """Publishes pre-encoded events in chunks spread over ``seconds``, each chunk
    acknowledged (idempotent, acks=all) before the next, so events keep arriving while
    an engine or a broker dies; ``slowest_confirm`` is the longest wait for an ack."""

    def __init__(self, brokers: str, topic: str, payloads: list[tuple[bytes, str]],
                 seconds: float, confirm_timeout: float = 60.0) -> None:
        super().__init__(name="event-producer", daemon=True)
        self.brokers = brokers
        self.topic = topic
        self.payloads = payloads
        chunks = max(1, round(seconds / CHUNK_SECONDS))
        size = -(-len(payloads) // chunks)
        self.chunks = [payloads[i:i + size] for i in range(0, len(payloads), size)]
        self.confirm_timeout = confirm_timeout
        self.published = 0
        self.slowest_confirm = 0.0
        self.failure: BaseException | None = None
        self.finished_at = 0.0
        self.done = threading.Event()

    @property
    def progress(self) -> float:
        return self.published / len(self.payloads)

    def run(self) -> None:
        try:
            producer = ConfirmedProducer(self.brokers)
            start = time.monotonic()
            for index, chunk in enumerate(self.chunks):
                for value, key in chunk:
                    producer.produce(self.topic, value, key)
                began = time.monotonic()
                producer.confirm(self.confirm_timeout)
                self.slowest_confirm = max(self.slowest_confirm, time.monotonic() - began)
                self.published += len(chunk)
                pause = start + (index + 1) * CHUNK_SECONDS - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        except BaseException as exc:
            self.failure = exc
        finally:
            self.finished_at = time.monotonic()
            self.done.set()


# comparing --------------------------------------------------------------------------


def table_diff(name: str, got: dict[str, Any], want: dict[str, Any],
               describe: Callable[[str], str] | None = None, shown: int = 5) -> tuple[int, str]:
    """(wrong keys, a readable summary): values that differ, keys missing, keys extra."""
    wrong = sorted(k for k in want if k in got and got[k] != want[k])
    missing = sorted(k for k in want if k not in got)
    extra = sorted(k for k in got if k not in want)
    bad = len(wrong) + len(missing) + len(extra)
    if not bad:
        return 0, f"{name}: {len(want)} keys, all equal to the fold"
    lines = [f"{name}: {bad} of {len(want)} keys wrong ({len(wrong)} different values, "
             f"{len(missing)} missing, {len(extra)} not in the fold)"]
    for key in wrong[:shown]:
        detail = f" [{describe(key)}]" if describe else ""
        lines.append(f"    {key}: got {got[key]}, fold {want[key]}{detail}")
    lines.extend(f"    {key}: missing, fold {want[key]}" for key in missing[:shown])
    lines.extend(f"    {key}: {got[key]}, not in the fold" for key in extra[:shown])
    return bad, "\n".join(lines)


def api_positions(client: AvailabilityClient, skus: list[str]) -> dict[str, Row]:
    def one(sku: str) -> list[tuple[str, Row]]:
        answer = client.list_positions(sku, timeout=10)
        return [(position_key(p.sku, p.location_id), tuple(getattr(p, q) for q in QUANTITIES))
                for p in answer.positions]

    with ThreadPoolExecutor(8) as pool:
        return {key: row for rows in pool.map(one, skus) for key, row in rows}


def api_channels(client: AvailabilityClient, rules: Rules, skus: list[str],
                 locations: list[str]) -> tuple[dict[str, int], int]:
    """BatchGetAvailability of every SKU on every channel (and every eligible location
    of a per-location channel): (channel key -> ats of the found ones, lookups made)."""
    table: dict[str, int] = {}
    lookups = 0
    for rule in rules.channels.values():
        where = ([loc for loc in locations if rules.is_eligible(rule.name, loc)]
                 if rule.per_location else [""])
        for location_id in where:
            try:
                answer = client.batch_get(rule.name, skus, location_id, timeout=30)
            except ApiError as exc:
                if exc.code.name == "NOT_FOUND":  # a channel the replica never saw
                    continue
                raise
            lookups += len(skus)
            for value in answer.results:
                if value.found:
                    key = "|".join(filter(None, (value.channel, value.sku, value.location_id)))
                    table[key] = value.ats
    return table, lookups


def api_get_sample(client: AvailabilityClient, keys: list[str]) -> dict[str, int | None]:
    """GetAvailability, one call per channel key."""
    def one(key: str) -> tuple[str, int | None]:
        channel, sku, *location = key.split("|")
        answer = client.get(channel, sku, location[0] if location else "", timeout=10)
        value = answer.availability
        return key, value.ats if value.found else None

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, keys))


def snapshot_ends(brokers: str, topics: TopicNames) -> dict[tuple[str, int], int]:
    """High watermark of every partition of both snapshot topics, asked of the broker."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"ends-{uuid.uuid4()}"})
    try:
        ends = {}
        for topic in (topics.positions, topics.channels):
            metadata = consumer.list_topics(topic, timeout=30).topics[topic]
            for partition in metadata.partitions:
                ends[(topic, partition)] = watermarks(consumer, topic, partition)[1]
        return ends
    finally:
        consumer.close()




def topic_tables(brokers: str, topics: TopicNames, codec: Codec
                 ) -> tuple[dict[str, Row], dict[str, int]]:
    """The latest record per key of the two snapshot topics, as the reference fold's
    tables (position quantities, channel ats)."""
    positions = latest_by_key(brokers, topics.positions,
                              lambda b: codec.decode(POSITION_SCHEMA, b), timeout=60)
    channels = latest_by_key(brokers, topics.channels,
                             lambda b: codec.decode(CHANNEL_SCHEMA, b), timeout=60)
    return ({k: tuple(v[q] for q in QUANTITIES) for k, v in positions.items()},
            {k: v["ats"] for k, v in channels.items()})
