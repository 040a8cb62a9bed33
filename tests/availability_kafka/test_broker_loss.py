"""kill -9 of one Kafka broker under live traffic, with the engine and an API replica on.

All real: a local 3-node KRaft cluster (`availability kafka start --nodes 3`, own home
and ports), the four topics created as `availability topics create` does (replication
factor 3, min.insync.replicas 2), `availability engine` and `availability api` as
subprocesses, events published steadily by an idempotent acks=all producer. While the
events arrive, the broker that coordinates the engine's consumer group (and leads some
partitions) is SIGKILLed; it stays down past its session timeout, so the controller
fences it and leadership moves, then it is started again.

Asserted: neither the engine nor the API exits; the API answers Get and BatchGet all
through the outage; the events topic holds every published event exactly once (the
producer's retries did not duplicate any); nothing is dead-lettered; once everything
drained, the snapshot topics' latest records and the API replica's tables equal the
in-process reference fold of the published events (so no event was lost or applied
twice); and the cluster converges: all three brokers back in every partition's ISR and
the engine's consumer group committing its progress again.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from availability.retail_day import Workload
from availability_api.client import ApiError, AvailabilityClient
from availability_contracts.codec import Codec
from availability_contracts.topics import TopicNames
from availability_domain.reference import reference_tables as fold_in_process
from availability_domain.rules import Rules, load_rules
from availability_kafka.admin import create_topics
from availability_kafka.topic_reader import scan_topic, watermarks
from benchmarks.rules import render_rules
from tests.read_sides import (
    ChunkedProducer,
    Row,
    api_channels,
    api_positions,
    table_diff,
    topic_tables,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SKUS = 400
EVENTS = 24_000
PRODUCE_SECONDS = 40.0
KILL_AT_PROGRESS = 0.30
DOWN_SECONDS = 15.0
"""How long the broker stays dead: past ``broker.session.timeout.ms`` (9 s), so the
controller fences it and moves the leadership of its partitions."""
CONVERGE_TIMEOUT = 240.0
ENGINE_GROUP = "availability-engine.availability"



def _cli() -> str:
    venv = REPO / ".venv" / "bin" / "availability"
    return str(venv) if venv.exists() else "availability"


class ApiProcess:
    """`availability api` as a subprocess: the replica tails the cluster's snapshot
    topics into its own RocksDB and serves gRPC on ``port``."""

    def __init__(self, brokers: str, topics: TopicNames, data_dir: Path, port: int,
                 log_path: Path) -> None:
        self.argv = [
            _cli(), "api", "--brokers", brokers, "--data-dir", str(data_dir),
            "--host", "127.0.0.1", "--port", str(port), "--http-port", "0",
            "--metrics-port", "0", "--drain-seconds", "0", "--grace-seconds", "2",
            "--events-topic", topics.events, "--dlq-topic", topics.dlq,
            "--positions-topic", topics.positions, "--channels-topic", topics.channels,
        ]
        self.target = f"127.0.0.1:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ApiProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ProbeStats:
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0


class ApiProbe(threading.Thread):
    """Calls Get and BatchGet on the API over and over, counting answers and failures
    per phase ("before", "outage", "after"), so the test can say the API kept serving
    while the broker was down."""

    def __init__(self, target: str, channel: str, skus: list[str]) -> None:
        super().__init__(name="api-probe", daemon=True)
        self.target = target
        self.channel = channel
        self.skus = skus
        self.phase = "before"
        self.stats: dict[str, ProbeStats] = {}
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def run(self) -> None:
        with AvailabilityClient(self.target, timeout=5) as client:
            index = 0
            while not self._halt.is_set():
                stats = self.stats.setdefault(self.phase, ProbeStats())
                sku = self.skus[index % len(self.skus)]
                index += 1
                began = time.monotonic()
                try:
                    client.get(self.channel, sku, timeout=5)
                    client.batch_get(self.channel, self.skus[:100], timeout=5)
                    stats.calls += 2
                except ApiError as exc:
                    stats.failures.append(f"{exc.code.name}: {exc}")
                stats.slowest = max(stats.slowest, time.monotonic() - began)
                self._halt.wait(0.05)


def pooled_channel(rules: Rules) -> str:
    return next(rule.name for rule in rules.channels.values() if not rule.per_location)


def api_tables(target: str, rules: Rules, skus: list[str], locations: list[str]
               ) -> tuple[dict[str, Row], dict[str, int]]:
    """The replica's two tables as the fold gives them (ListPositions of every SKU,
    BatchGet of every SKU on every channel and eligible location)."""
    with AvailabilityClient(target, timeout=30) as client:
        return api_positions(client, skus), api_channels(client, rules, skus, locations)[0]


def diff(name: str, got: dict[str, Any], want: dict[str, Any]) -> str:
    """"" when equal, else a readable summary of the wrong, missing and extra keys."""
    wrong, text = table_diff(name, got, want)
    return text if wrong else ""


def group_coordinator(brokers: str, group: str) -> int | None:
    """Node id of the broker coordinating ``group`` (None while it is unknown)."""
    admin = AdminClient({"bootstrap.servers": brokers})
    with contextlib.suppress(Exception):
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
        return int(description.coordinator.id)
    return None


def leaders(brokers: str, topics: TopicNames) -> dict[str, dict[int, int]]:
    """Topic -> partition -> leader id, for the four topics."""
    admin = AdminClient({"bootstrap.servers": brokers})
    metadata = admin.list_topics(timeout=10).topics
    return {name: {p: m.leader for p, m in metadata[name].partitions.items()}
            for name in vars(topics).values()}


def committed_offsets(brokers: str, group: str, topic: str, partitions: int
                      ) -> dict[int, int] | None:
    """The offsets ``group`` committed for ``topic`` (None when the coordinator does not
    answer, e.g. while it moves)."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": group,
                         "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                       timeout=10)
        return {tp.partition: tp.offset for tp in committed}
    except Exception:
        return None
    finally:
        consumer.close()


def internal_topic_replication(brokers: str, topic: str) -> tuple[int, str | None]:
    """(replicas of every partition, min.insync.replicas) of an internal topic."""
    admin = AdminClient({"bootstrap.servers": brokers})
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    replicas = {len(p.replicas) for p in metadata.partitions.values()}
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entry = admin.describe_configs([resource])[resource].result(30).get("min.insync.replicas")
    return (replicas.pop() if len(replicas) == 1 else -1,
            entry.value if entry is not None else None)


def end_offsets(brokers: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"ends-{uuid.uuid4()}"})
    try:
        return {p: watermarks(consumer, topic, p)[1] for p in range(partitions)}
    finally:
        consumer.close()


@pytest.fixture
def cluster_topics(kafka_cluster: Any) -> Iterator[TopicNames]:
    """The four topics on the cluster, as `availability topics create` makes them."""
    prefix = f"loss-{uuid.uuid4().hex[:8]}"
    names = TopicNames(events=f"{prefix}.events", dlq=f"{prefix}.dlq",
                       positions=f"{prefix}.positions", channels=f"{prefix}.channels")
    outcomes = create_topics(kafka_cluster.bootstrap, names, partitions=4)
    assert [(o.replication_factor, o.min_insync) for o in outcomes] == [(3, 2)] * 4, outcomes
    yield names


def test_broker_loss_loses_nothing_and_the_engine_and_api_keep_going(
        kafka_cluster: Any, cluster_topics: TopicNames, codec: Codec, tmp_path: Path,
        cluster_engine_factory: Callable[..., Any], free_port: Callable[[], int],
        wait_for: Callable[..., Any]) -> None:
    cluster, topics = kafka_cluster, cluster_topics
    brokers = cluster.bootstrap
    began = time.monotonic()

    # The topics as the cluster has them: 3 replicas, min.insync.replicas 2 on each,
    # and the internal topics' settings in the brokers' config.
    admin = AdminClient({"bootstrap.servers": brokers})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in vars(topics).values()]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result(30)["min.insync.replicas"].value == "2", resource.name
    broker_config = admin.describe_configs([ConfigResource(ConfigResource.Type.BROKER, "1")])
    settings = {k: v.value for k, v in next(iter(broker_config.values())).result(30).items()}
    assert (settings["offsets.topic.replication.factor"],
            settings["transaction.state.log.replication.factor"],
            settings["transaction.state.log.min.isr"],
            settings["min.insync.replicas"]) == ("3", "3", "2", "2")

    rules_path = tmp_path / "rules.toml"
    workload = Workload(skus=SKUS, dcs=3, stores=20, seed=12)
    rules_path.write_text(render_rules(dcs=workload.dcs, stores=workload.stores))
    rules = load_rules(rules_path)
    events = list(workload.events(EVENTS))
    want_positions, want_channels = fold_in_process(events, rules)
    payloads = [(codec.encode_event(e, topics.events), e.position_key) for e in events]

    engine = cluster_engine_factory(topics, rules_path).start()
    api = ApiProcess(brokers, topics, tmp_path / "replica", free_port(),
                     tmp_path / "api.log").start()
    probe: ApiProbe | None = None
    problems: list[str] = []
    producer = ChunkedProducer(brokers, topics.events, payloads, PRODUCE_SECONDS,
                               confirm_timeout=120)

    def alive(where: str) -> None:
        assert engine.process.poll() is None, (
            f"the engine exited ({where}), code {engine.process.returncode}:\n"
            f"{engine.log()[-4000:]}")
        assert api.alive(), f"the API exited ({where}):\n{api.log()[-4000:]}"

    try:
        wait_for(lambda: "recovery" in engine.log(), 90, "the engine to start")

        def serving() -> bool:
            alive("starting")
            with contextlib.suppress(ApiError), AvailabilityClient(api.target) as client:
                return client.health(timeout=2) == "SERVING"
            return False

        wait_for(serving, 90, "the API to serve")
        producer.start()
        channel = pooled_channel(rules)

        def has_values() -> bool:
            alive("warming up")
            with contextlib.suppress(ApiError), AvailabilityClient(api.target) as client:
                answer = client.batch_get(channel, workload.sku_ids[:100], timeout=5)
                return any(value.found for value in answer.results)
            return False  # NOT_FOUND: the replica has not seen the channel yet

        wait_for(has_values, 90, "the first channel values in the API")
        probe = ApiProbe(api.target, channel, workload.sku_ids)
        probe.start()

        # kill -9 the broker coordinating the engine's group, once enough has arrived
        wait_for(lambda: producer.progress >= KILL_AT_PROGRESS or producer.done.is_set(),
                 120, f"{KILL_AT_PROGRESS:.0%} of the events published")
        assert not producer.done.is_set(), "harness: the producer finished before the kill"
        coordinator = wait_for(lambda: group_coordinator(brokers, ENGINE_GROUP), 60,
                               f"the coordinator of {ENGINE_GROUP}")
        led = {topic: sorted(p for p, leader in parts.items() if leader == coordinator)
               for topic, parts in leaders(brokers, topics).items()}
        victim = coordinator - 1  # node index; its node.id is index + 1
        alive("before the kill")
        probe.phase = "outage"
        killed_at = time.monotonic()
        killed_pid = cluster.kill(victim)
        at_progress = producer.progress
        while time.monotonic() < killed_at + DOWN_SECONDS:
            alive("broker down")
            time.sleep(0.5)
        view = cluster.view()
        fenced = view is not None and coordinator not in view.brokers
        assert not producer.done.is_set(), (
            "harness: the producer finished while the broker was down; raise PRODUCE_SECONDS")
        # bring it back (in a thread: convergence is timed from the restart's start)
        restart_began = time.monotonic()
        restart: dict[str, Any] = {}

        def bring_back() -> None:
            try:
                restart["seconds"] = cluster.restart()
            except BaseException as exc:
                restart["error"] = exc

        restarter = threading.Thread(target=bring_back, name="restart", daemon=True)
        restarter.start()
        probe.phase = "after"

        # converge: the broker registered again and every partition (the internal topics'
        # too) with its 3 replicas in sync; the engine's group committing its progress to
        # the end of the events topic; the topics' and the API's tables equal to the fold
        converged: dict[str, float] = {}
        last_api: tuple[dict[str, Row], dict[str, int]] = ({}, {})
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while time.monotonic() < deadline:
            alive("converging")
            assert "error" not in restart, f"the restart failed: {restart['error']!r}"
            now = time.monotonic()
            view = cluster.view()
            if "isr" not in converged and view is not None and len(view.brokers) == 3 \
                    and view.under_replicated == 0 and "seconds" in restart:
                converged["isr"] = now
            if producer.done.is_set():
                assert producer.failure is None, f"the producer failed: {producer.failure!r}"
                assert producer.published == len(events)
                ends = end_offsets(brokers, topics.events, 4)
                committed = committed_offsets(brokers, ENGINE_GROUP, topics.events, 4)
                if "group" not in converged and committed == ends:
                    converged["group"] = now
                if "topics" not in converged:
                    got_positions, got_channels = topic_tables(brokers, topics, codec)
                    if got_positions == want_positions and got_channels == want_channels:
                        converged["topics"] = now
                if "topics" in converged and "api" not in converged:
                    last_api = api_tables(api.target, rules, workload.sku_ids,
                                          workload.locations)
                    if last_api == (want_positions, want_channels):
                        converged["api"] = now
            if len(converged) == 4:
                break
            time.sleep(0.5)
        else:
            view = cluster.view()
            problems.append(f"not converged in {CONVERGE_TIMEOUT:.0f} s: only "
                            f"{sorted(converged)}; cluster {view}")
        restarter.join(60)
        restart_s = restart.get("seconds", float("nan"))
        offsets_rf, offsets_isr = internal_topic_replication(brokers, "__consumer_offsets")
        if (offsets_rf, offsets_isr) != (3, "2"):
            problems.append(f"__consumer_offsets: replication factor {offsets_rf}, "
                            f"min.insync.replicas {offsets_isr}; want 3 and 2")
    finally:
        if probe is not None:
            probe.stop()
        engine_code = engine.stop()
        api.stop()

    # nothing lost, nothing twice: every event on the topic once (a retry that the broker
    # had already written would be a byte-identical second record), and the tables
    stored = Counter(m.value() for m in scan_topic(brokers, topics.events, 120))
    published = Counter(value for value, _ in payloads)
    stored_count = sum(stored.values())
    doubled = sum((stored - published).values())
    lost = sum((published - stored).values())
    dead_letters = sum(1 for _ in scan_topic(brokers, topics.dlq, 60))
    got_positions, got_channels = topic_tables(brokers, topics, codec)
    problems += [text for text in (
        diff("topic positions", got_positions, want_positions),
        diff("topic channels", got_channels, want_channels)) if text]
    if "api" not in converged and last_api != ({}, {}):  # as last read (it is stopped)
        problems += [text for text in (
            diff("API positions", last_api[0], want_positions),
            diff("API channels", last_api[1], want_channels)) if text]
    if doubled or lost:
        problems.append(f"the events topic holds {stored_count} records for {len(events)} "
                        f"published: {doubled} written twice, {lost} missing")
    if dead_letters:
        problems.append(f"{dead_letters} dead letters")
    outage = probe.stats.get("outage", ProbeStats()) if probe else ProbeStats()
    for phase, stats in (probe.stats.items() if probe else ()):
        if stats.failures:
            problems.append(f"API calls failed {phase}: {len(stats.failures)} of "
                            f"{stats.calls + len(stats.failures)}: {stats.failures[:3]}")

    def since(mark: str, origin: float) -> str:
        return f"{converged[mark] - origin:.1f}s" if mark in converged else "never"

    report = "\n".join([
        f"--- broker loss: {len(events)} events ({SKUS} SKUs) over {PRODUCE_SECONDS:.0f} s "
        f"to a 3-node cluster at {brokers}",
        f"killed node {victim} (node.id {coordinator}, pid {killed_pid}): coordinator of "
        f"{ENGINE_GROUP}, leader of {led}; at {at_progress:.0%} published, "
        f"t={killed_at - began:.1f}s; down {DOWN_SECONDS:.0f} s (fenced by the controller "
        f"then: {fenced}); restart took {restart_s:.1f} s",
        f"producer: slowest acknowledged chunk {producer.slowest_confirm:.1f} s; events "
        f"topic holds {stored_count} records ({doubled} written twice, {lost} missing); "
        f"dead letters {dead_letters}",
        f"API during the outage: {outage.calls} Get/BatchGet answered, "
        f"{len(outage.failures)} failed, slowest {outage.slowest * 1000:.0f} ms",
        f"keys compared: {len(want_positions)} positions, {len(want_channels)} channels "
        "(topics and API replica against the fold)",
        f"converged, from the restart's start: all 3 brokers in every ISR "
        f"{since('isr', restart_began)}, engine group committed to the end "
        f"{since('group', restart_began)}, topics = fold {since('topics', restart_began)}, "
        f"API = fold {since('api', restart_began)} (the last event was acknowledged "
        f"{producer.finished_at - restart_began:.1f}s after it)",
        f"__consumer_offsets: replication factor {offsets_rf}, min.insync.replicas "
        f"{offsets_isr}; engine exit code on SIGTERM at the end: {engine_code}",
        *problems,
    ])
    print("\n" + report)
    assert not problems, report
    assert engine_code == 0, f"the engine did not stop cleanly:\n{engine.log()[-3000:]}"
