"""kill -9 under live traffic, seen from the read side.

``test_recovery.py`` checks the *latest record per key* on the snapshot topics after
crashes. Consumers do not read the topics that way: the API replica and every
marketplace feed keep, per key, the record with the **highest version** and drop any
record whose version is not newer (README, "Snapshots"). That only works if a version,
once published, always means the same value. After a kill -9 the engine resumes from
its last recovery epoch and replays the events since then; if it then republishes a
version it already published with a different value (the replay folds the backlog in
other batches, so the per-key version counter advances differently), such a consumer
keeps a wrong number for good, although the topic's last record per key is right.

The scenario, all real: a broker, the engine as a subprocess (1 or 2 processes, four
partitions), events *arriving* while the engine is killed three times and restarted on
the same recovery directory, an in-process API replica (real ``ApiServer``: Kafka
consumer, RocksDB, gRPC) and a plain confluent-kafka consumer that keeps the newest
version per key and remembers every (topic, key, version) -> value it ever saw. At the
end, once everything drained, both read sides must equal an in-process fold of the
same events, and no (key, version) may ever have carried two values. The topic's
latest-record table is checked against the fold first, so that a failure of the read
sides is not a harness (or a lost/doubled event) problem.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from availability.retail_day import Workload
from availability_api.client import ApiError, AvailabilityClient
from availability_api.server import ApiServer, ApiSettings
from availability_contracts.codec import Codec
from availability_contracts.keys import position_key
from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA
from availability_contracts.topics import TopicNames
from availability_domain.reference import QUANTITIES
from availability_domain.reference import reference_tables as fold_in_process
from availability_domain.rules import Rules, load_rules
from availability_kafka.delivery import ConfirmedProducer
from availability_kafka.topic_reader import latest_by_key, watermarks
from benchmarks.rules import render_rules

pytestmark = pytest.mark.kafka

SKUS = 2_000
EVENTS = 50_000
PRODUCE_SECONDS = 18.0
CHUNK_SECONDS = 0.25
KILLS = 3
KILL_AT_PROGRESS = ((0.10, 0.25), (0.35, 0.50), (0.60, 0.75))
"""Each kill waits until the producer has published a share of the events drawn from
its band, so every kill (and every restart) happens while events keep arriving."""
MIN_RUN_SECONDS = 2.0
"""An engine runs at least this long after its start line before it is killed, so it
has committed epochs (``--epoch-interval 1``) and published output since the last one."""
CONVERGE_TIMEOUT = 120.0
STABLE_SECONDS = 3.0

Row = tuple[Any, ...]
Versioned = tuple[int, Row]


# expected tables --------------------------------------------------------------------


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


class InProcessApi:
    """The real :class:`ApiServer` (replica thread, RocksDB, grpc.aio) on a private event
    loop thread, as ``RunningApi`` in ``tests/availability_api/conftest.py``."""

    def __init__(self, settings: ApiSettings) -> None:
        self.server = ApiServer(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-loop",
                                        daemon=True)
        self.running = False

    def start(self) -> InProcessApi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(30)
        self.running = True
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def caught_up(self, ends: dict[tuple[str, int], int]) -> bool:
        replica = self.server.replica
        assert replica is not None
        if replica.failure is not None:
            raise AssertionError(f"API replica failed: {replica.failure!r}")
        offsets = replica.stored_offsets()
        return replica.lag == 0 and all(offsets.get(where, 0) >= end
                                        for where, end in ends.items())

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        asyncio.run_coroutine_threadsafe(self.server.stop(drain=False), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def api_replica(brokers: str, topics: TopicNames, tmp_path: Path) -> Iterator[InProcessApi]:
    settings = ApiSettings(data_dir=tmp_path / "replica", brokers=brokers, topics=topics,
                           host="127.0.0.1", port=0, drain_seconds=0.0, grace_seconds=2.0)
    api = InProcessApi(settings).start()
    yield api
    api.stop()


@pytest.fixture
def read_side(brokers: str, topics: TopicNames) -> Iterator[NewestVersionConsumer]:
    reader = NewestVersionConsumer(brokers, topics)
    reader.start()
    yield reader
    reader.stop()


# the write side ---------------------------------------------------------------------


class ChunkedProducer(threading.Thread):
    """Publishes pre-encoded events in chunks spread over ``seconds``, each chunk
    acknowledged before the next, so events keep arriving while the engine dies."""

    def __init__(self, brokers: str, topic: str, payloads: list[tuple[bytes, str]],
                 seconds: float) -> None:
        super().__init__(name="event-producer", daemon=True)
        self.brokers = brokers
        self.topic = topic
        self.payloads = payloads
        chunks = max(1, round(seconds / CHUNK_SECONDS))
        size = -(-len(payloads) // chunks)
        self.chunks = [payloads[i:i + size] for i in range(0, len(payloads), size)]
        self.published = 0
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
                producer.confirm(60)
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


def _has_started(engine: Any) -> bool:
    return "recovery" in engine.log()


# the test ---------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_read_sides_equal_the_fold_after_kill_9_under_live_traffic(
        processes: int, brokers: str, topics: TopicNames, codec: Codec, tmp_path: Path,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any],
        api_replica: InProcessApi, read_side: NewestVersionConsumer) -> None:
    rules_path = tmp_path / "rules.toml"
    workload = Workload(skus=SKUS, dcs=3, stores=20, seed=23)
    rules_path.write_text(render_rules(dcs=workload.dcs, stores=workload.stores))
    rules = load_rules(rules_path)
    events = list(workload.events(EVENTS))
    want_positions, want_channels = fold_in_process(events, rules)
    payloads = [(codec.encode_event(e, topics.events), e.position_key) for e in events]
    recovery = tmp_path / f"recovery-{processes}"
    rng = random.Random(1000 + processes)

    engine = engine_factory(topics, rules_path, processes=processes,
                            recovery_dir=recovery).start()
    wait_for(lambda: _has_started(engine), 30, "the first engine start")
    producer = ChunkedProducer(brokers, topics.events, payloads, PRODUCE_SECONDS)
    producer.start()
    began = time.monotonic()
    kills: list[str] = []
    for crash, (low, high) in enumerate(KILL_AT_PROGRESS[:KILLS]):
        started = wait_for(lambda e=engine: _has_started(e) and time.monotonic(), 30,
                           f"engine start #{crash + 1}", interval=0.05)
        target = rng.uniform(low, high)
        extra_run = rng.uniform(0.0, 1.0)
        while (time.monotonic() < started + MIN_RUN_SECONDS + extra_run
               or (producer.progress < target and not producer.done.is_set())):
            time.sleep(0.02)
        assert engine.process.poll() is None, f"engine died by itself:\n{engine.log()[-3000:]}"
        engine.kill()
        kills.append(f"t={time.monotonic() - began:.1f}s at {producer.progress:.0%} produced")
        assert not producer.done.is_set(), (
            f"harness: the producer finished before kill #{crash + 1} ({kills}); "
            "the kills must happen while events arrive (raise PRODUCE_SECONDS)")
        time.sleep(rng.uniform(0.3, 1.5))  # down: the backlog grows
        engine = engine_factory(topics, rules_path, processes=processes,
                                recovery_dir=recovery).start()
    last_restart = time.monotonic()
    try:
        producer.join(120)
        assert producer.failure is None, f"harness: producer failed: {producer.failure!r}"
        assert producer.published == len(events)

        # converged: the topic's latest record per key equals the fold, both read sides
        # have read to the topic ends, and nothing new arrived for STABLE_SECONDS
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        converged_at: float | None = None
        stable_since, last_records = time.monotonic(), -1
        while time.monotonic() < deadline:
            assert read_side.failure is None, f"harness: consumer failed: {read_side.failure!r}"
            assert engine.process.poll() is None, (
                f"engine died after the last restart:\n{engine.log()[-3000:]}")
            ends = snapshot_ends(brokers, topics)
            drained = read_side.caught_up(ends) and api_replica.caught_up(ends)
            with read_side.lock:
                records = read_side.records
                latest_ok = (
                    {k: v for k, (_, v) in read_side.latest[topics.positions].items()}
                    == want_positions
                    and {k: v[0] for k, (_, v) in read_side.latest[topics.channels].items()}
                    == want_channels)
            if records != last_records or not drained:
                stable_since, last_records = time.monotonic(), records
            if latest_ok and drained and converged_at is None:
                converged_at = time.monotonic()
            if drained and time.monotonic() - stable_since >= STABLE_SECONDS and (
                    latest_ok or time.monotonic() - stable_since >= 4 * STABLE_SECONDS):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"harness: the read sides did not drain in {CONVERGE_TIMEOUT}s "
                f"(consumer at {read_side.next_offsets}, ends {snapshot_ends(brokers, topics)})")
    finally:
        engine.stop()
    converge_s = (f"{converged_at - last_restart:.1f}s after the last restart, "
                  f"{converged_at - producer.finished_at:.1f}s after the last event was "
                  "produced" if converged_at is not None else "never (latest records != fold)")

    # 1. harness: the topic itself (independent scan) holds the fold's numbers
    topic_positions = {k: position_row(v) for k, v in latest_by_key(
        brokers, topics.positions, lambda b: codec.decode(POSITION_SCHEMA, b)).items()}
    topic_channels = {k: v["ats"] for k, v in latest_by_key(
        brokers, topics.channels, lambda b: codec.decode(CHANNEL_SCHEMA, b)).items()}
    harness = [table_diff("topic latest-per-key positions", topic_positions, want_positions),
               table_diff("topic latest-per-key channels", topic_channels, want_channels)]

    # 2. the newest-version consumer
    with read_side.lock:
        newest_p = dict(read_side.newest[topics.positions])
        newest_c = dict(read_side.newest[topics.channels])
        latest_p = dict(read_side.latest[topics.positions])
        latest_c = dict(read_side.latest[topics.channels])
        conflicts = dict(read_side.conflicts)
        records, dropped = read_side.records, read_side.dropped_not_newer

    def versions(held: dict[str, Versioned], latest: dict[str, Versioned]
                 ) -> Callable[[str], str]:
        def describe(key: str) -> str:
            last = latest.get(key)
            if last is None:
                return f"held v{held[key][0]}, no record on the topic"
            same = "the same" if last[1] == held[key][1] else "another"
            return (f"held v{held[key][0]}, the topic's last record is v{last[0]} "
                    f"with {same} value")
        return describe

    newest = [
        table_diff("newest-version consumer positions",
                   {k: v for k, (_, v) in newest_p.items()}, want_positions,
                   versions(newest_p, latest_p)),
        table_diff("newest-version consumer channels",
                   {k: v[0] for k, (_, v) in newest_c.items()}, want_channels,
                   versions(newest_c, latest_c)),
    ]

    # 3. the API replica
    skus = workload.sku_ids
    with AvailabilityClient(api_replica.target, timeout=10) as client:
        got_positions = api_positions(client, skus)
        got_channels, lookups = api_channels(client, rules, skus, workload.locations)
        sample = sorted(rng.sample(sorted(want_channels), min(300, len(want_channels))))
        got_get = api_get_sample(client, sample)
    api = [
        table_diff("API ListPositions", got_positions, want_positions),
        table_diff("API BatchGetAvailability", got_channels, want_channels),
        table_diff("API GetAvailability (sample)", {k: v for k, v in got_get.items()
                                                    if v is not None},
                   {k: want_channels[k] for k in sample}),
    ]

    # 4. a (key, version) must never carry two values
    conflict_keys = {(topic, key) for topic, key, _ in conflicts}
    conflict_lines = [f"(key, version) with two different values: {len(conflicts)} "
                      f"(over {len(conflict_keys)} keys; positions "
                      f"{sum(1 for t, _, _ in conflicts if t == topics.positions)}, channels "
                      f"{sum(1 for t, _, _ in conflicts if t == topics.channels)})"]
    for (topic, key, version), values in sorted(conflicts.items())[:5]:
        kind = "position" if topic == topics.positions else "channel"
        conflict_lines.append(f"    {kind} {key} v{version}: {values[:3]}")

    report = "\n".join([
        f"--- crash read side, {processes} process(es): {len(events)} events, "
        f"{len(kills)} kills ({'; '.join(kills)}), snapshot records read {records} "
        f"(dropped as not newer {dropped}), keys compared: {len(want_positions)} positions, "
        f"{len(want_channels)} channels ({lookups} BatchGet lookups, {len(sample)} Get), "
        f"converged {converge_s}",
        *(text for _, text in harness + newest + api), *conflict_lines])
    print("\n" + report)

    assert not any(bad for bad, _ in harness), (
        "harness/engine: the topic's latest record per key differs from the fold, so the "
        "failure is NOT (only) the version bug:\n" + report)
    failed = sum(bad for bad, _ in newest + api) + len(conflicts)
    assert failed == 0, (
        "after kill -9 under live traffic the topic's latest records equal the fold, but "
        "consumers keeping the newest version per key do not:\n" + report)
