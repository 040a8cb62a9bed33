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

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from availability.retail_day import Workload
from availability_api.client import AvailabilityClient
from availability_api.server import ApiSettings
from availability_contracts.codec import Codec
from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA
from availability_contracts.topics import TopicNames
from availability_domain.reference import reference_tables as fold_in_process
from availability_domain.rules import load_rules
from availability_kafka.topic_reader import latest_by_key
from benchmarks.rules import render_rules
from tests.read_sides import (
    ChunkedProducer,
    NewestVersionConsumer,
    RunningApi,
    Versioned,
    api_channels,
    api_get_sample,
    api_positions,
    position_row,
    snapshot_ends,
    table_diff,
)

pytestmark = pytest.mark.kafka

SKUS = 2_000
EVENTS = 50_000
PRODUCE_SECONDS = 18.0
KILLS = 3
KILL_AT_PROGRESS = ((0.10, 0.25), (0.35, 0.50), (0.60, 0.75))
"""Each kill waits until the producer has published a share of the events drawn from
its band, so every kill (and every restart) happens while events keep arriving."""
MIN_RUN_SECONDS = 2.0
"""An engine runs at least this long after its start line before it is killed, so it
has committed epochs (``--epoch-interval 1``) and published output since the last one."""
CONVERGE_TIMEOUT = 120.0
STABLE_SECONDS = 3.0



@pytest.fixture
def api_replica(brokers: str, topics: TopicNames, tmp_path: Path) -> Iterator[RunningApi]:
    settings = ApiSettings(data_dir=tmp_path / "replica", brokers=brokers, topics=topics,
                           host="127.0.0.1", port=0, drain_seconds=0.0, grace_seconds=2.0)
    api = RunningApi(settings).start()
    yield api
    api.stop(drain=False)


@pytest.fixture
def read_side(brokers: str, topics: TopicNames) -> Iterator[NewestVersionConsumer]:
    reader = NewestVersionConsumer(brokers, topics)
    reader.start()
    yield reader
    reader.stop()


def _has_started(engine: Any) -> bool:
    return "recovery" in engine.log()


# the test ---------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_read_sides_equal_the_fold_after_kill_9_under_live_traffic(
        processes: int, brokers: str, topics: TopicNames, codec: Codec, tmp_path: Path,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any],
        api_replica: RunningApi, read_side: NewestVersionConsumer) -> None:
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
