"""Kafka fixtures for the whole suite: one real broker, fresh topics for every test.

`make test` starts the local broker; when it is not running (plain `pytest`), the
session starts it and stops it at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from availability_contracts.codec import Codec
from availability_contracts.topics import TopicNames
from availability_domain.events import InventoryEvent
from availability_kafka.admin import create_topics
from availability_kafka.config import KafkaConnection, load_kafka_config, parse_properties
from availability_kafka.delivery import ConfirmedProducer

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@pytest.fixture(scope="session")
def brokers() -> Iterator[str]:
    from availability.local_kafka.broker import LocalKafka, Settings, kafka_answers

    bootstrap = os.environ.get("AVAILABILITY_BROKERS", "127.0.0.1:9092")
    if kafka_answers(bootstrap, timeout=3.0):
        yield bootstrap
        return
    broker = LocalKafka(Settings.from_env())
    yield broker.start()
    broker.stop()


@dataclass(frozen=True)
class SecureKafka:
    """The local broker's SASL_SSL (SCRAM-SHA-512) listener and the client settings file
    of its user, as `availability kafka start` made them."""

    bootstrap: str
    config: Path
    logs: tuple[Path, ...] = ()
    """The broker's own log files."""

    def cli_args(self) -> list[str]:
        """``--brokers`` and ``--kafka-config`` for an `availability` command."""
        return ["--brokers", self.bootstrap, "--kafka-config", str(self.config)]

    def connection(self) -> KafkaConnection:
        return load_kafka_config(self.config, self.bootstrap)

    def password(self) -> str:
        """The user's password, for tests that check it is never shown."""
        return parse_properties(self.config)["sasl.password"]


@pytest.fixture(scope="session")
def secure_kafka(brokers: str) -> SecureKafka:
    """The SASL_SSL listener of the broker under test. Skips when that broker has none:
    it is not the local broker of this $AVAILABILITY_HOME, or it was launched before the
    listener existed. Fails when the listener is there but its login does not work."""
    from availability.local_kafka.broker import LocalKafka, Settings

    local = LocalKafka(Settings.from_env())
    status = local.status(timeout=10.0)
    home = local.settings.home
    if not status.running or status.bootstrap != brokers:
        pytest.skip(f"no SASL_SSL listener to test: the broker under test ({brokers}) is not "
                    f"the local broker of {home} (`availability kafka start` makes one)")
    if status.sasl_bootstrap is None or status.client_config is None:
        pytest.skip(f"the local broker at {brokers} has {status.describe_sasl()}")
    if not status.sasl_answering:
        pytest.fail(f"the SASL_SSL listener at {status.sasl_bootstrap} does not work: "
                    f"{status.sasl_reason}")
    settings = local.settings
    return SecureKafka(status.sasl_bootstrap, status.client_config,
                       (settings.server_log, settings.stdout_log))


@pytest.fixture
def topics(brokers: str, request: pytest.FixtureRequest) -> Iterator[TopicNames]:
    """The four topics under names unique to this test, so tests never share state;
    deleted afterwards, so a long-lived dev broker does not pile up partitions (a broker
    holding tens of thousands of them takes minutes to start)."""
    prefix = f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace(
        "]", "")
    names = TopicNames(
        events=f"{prefix}.events",
        dlq=f"{prefix}.dlq",
        positions=f"{prefix}.positions",
        channels=f"{prefix}.channels",
    )
    partitions = getattr(request, "param", 4)
    create_topics(brokers, names, partitions=partitions)
    yield names
    delete_topics(brokers, names)


def delete_topics(brokers: str, names: TopicNames) -> None:
    """Best effort: a test's leftovers must not fail the test."""
    from confluent_kafka.admin import AdminClient

    with contextlib.suppress(Exception):
        admin = AdminClient({"bootstrap.servers": brokers})
        for future in admin.delete_topics(list(names.configs()), operation_timeout=10).values():
            with contextlib.suppress(Exception):  # already gone, or the broker is busy
                future.result(15)


@pytest.fixture
def snapshot_tables(brokers: str, codec: Codec
                    ) -> Callable[[TopicNames], tuple[dict[str, tuple[int, ...]], dict[str, int]]]:
    """``snapshot_tables(topics)``: the latest record per key of the two snapshot topics,
    as the reference fold's tables (position quantities, channel ats)."""
    from tests.read_sides import topic_tables

    def read(topics: TopicNames) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
        return topic_tables(brokers, topics, codec)

    return read


@pytest.fixture
def codec() -> Codec:
    return Codec()


@pytest.fixture
def publish_events(brokers: str, codec: Codec):
    """Publish events (objects or raw bytes) to a topic and wait for every ack."""

    def publish(topic: str, events: list[InventoryEvent | bytes]) -> int:
        producer = ConfirmedProducer(brokers)
        for event in events:
            if isinstance(event, InventoryEvent):
                producer.produce(topic, codec.encode_event(event, topic), event.position_key)
            else:
                producer.produce(topic, event, b"raw")
        return producer.confirm()

    return publish


class EngineProcess:
    """`availability engine` as a real subprocess, for end-to-end and crash tests."""

    def __init__(self, brokers: str, topics: TopicNames, rules: Path, recovery_dir: Path,
                 log_path: Path, processes: int = 1, extra: tuple[str, ...] = ()) -> None:
        self.argv = [
            str(REPO / ".venv" / "bin" / "availability") if (REPO / ".venv").exists()
            else "availability",
            "engine", "--brokers", brokers, "--rules", str(rules),
            "--recovery-dir", str(recovery_dir), "--processes", str(processes),
            "--events-topic", topics.events, "--dlq-topic", topics.dlq,
            "--positions-topic", topics.positions, "--channels-topic", topics.channels,
            "--epoch-interval", "1", "--metrics-port", "0", *extra,
        ]
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group: the crash case."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def engine_factory(brokers: str, tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    yield from _engines(brokers, tmp_path, "engine")


def _engines(brokers: str, tmp_path: Path, name: str) -> Iterator[Callable[..., EngineProcess]]:
    """``make(topics, rules, ...)`` -> an engine on ``brokers`` (started by the caller);
    every engine made is killed at the end of the test."""
    started: list[EngineProcess] = []

    def make(topics: TopicNames, rules: Path, processes: int = 1,
             recovery_dir: Path | None = None, extra: tuple[str, ...] = ()) -> EngineProcess:
        engine = EngineProcess(brokers, topics, rules, recovery_dir or tmp_path / "recovery",
                               tmp_path / f"{name}-{len(started)}.log", processes, extra)
        started.append(engine)
        return engine

    yield make
    for engine in started:
        engine.kill()


def _wait_for(predicate: Callable[[], T | None], timeout: float, what: str,
              interval: float = 0.5) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """``wait_for(predicate, timeout, what)``: poll until truthy, else fail naming ``what``."""
    return _wait_for


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of a Prometheus endpoint; {} while it is down."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def free_port() -> Callable[[], int]:
    """``free_port()``: a TCP port on 127.0.0.1 that nothing listens on right now."""
    return _free_port


@pytest.fixture
def scrape_metrics() -> Callable[[int], dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """``scrape_metrics(port)``: the samples a Prometheus endpoint serves."""
    return _scrape


# a local Kafka cluster -------------------------------------------------------------


def _free_cluster_port(nodes: int) -> int:
    """A port P such that every port of a local cluster of ``nodes`` nodes (node n:
    P + 10n .. P + 10n + 2) is free, well away from the shared broker (9092-9114).

    P is taken below the kernel's ephemeral range: the JVMs bind seconds after this
    check, and a port in that range can meanwhile become the local end of any outgoing
    connection on the machine (a 3-node start failed in CI with "Address already in
    use" that way)."""
    import random
    import socket

    from availability.local_kafka.broker import NODE_PORT_STRIDE

    span = NODE_PORT_STRIDE * nodes
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
                            .split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(200):
        port = random.randrange(10_000, max(10_001, ephemeral_low - span))
        if 9000 - span <= port <= 9200:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for node in range(nodes):
                    for offset in range(3):
                        stack.enter_context(socket.socket()).bind(
                            ("127.0.0.1", port + node * NODE_PORT_STRIDE + offset))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free ports for a {nodes}-node cluster")


@pytest.fixture
def free_cluster_port() -> Callable[[int], int]:
    """``free_cluster_port(nodes)``: a base port whose whole local-cluster port range is free."""
    return _free_cluster_port


@dataclass
class LocalCluster:
    """A local Kafka cluster of the test's own (temporary home, free ports), started by
    the ``kafka_cluster`` fixture; nodes can be killed and brought back."""

    kafka: object
    """The :class:`availability.local_kafka.LocalKafka` running it."""
    bootstrap: str
    nodes: int

    def pids(self) -> dict[int, int]:
        """Node index -> pid of every running node."""
        return self.kafka.node_pids()  # type: ignore[attr-defined]

    def kill(self, node: int) -> int:
        """SIGKILL node ``node`` (index; its Kafka node.id is node + 1) and wait for it
        to be gone; returns its pid."""
        pid = self.pids()[node]
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: node not in self.pids(), 30, f"node {node} (pid {pid}) to die")
        return pid

    def restart(self, timeout: float = 180.0) -> float:
        """Start the nodes that are not running and wait until all are registered again;
        returns the seconds it took."""
        began = time.monotonic()
        self.kafka.start(timeout=timeout)  # type: ignore[attr-defined]
        return time.monotonic() - began

    def view(self, timeout: float = 5.0):  # -> ClusterView | None
        from availability.local_kafka.broker import cluster_view

        return cluster_view(self.bootstrap, timeout)


@pytest.fixture
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-node KRaft cluster (`availability kafka start --nodes 3`) in a temporary home
    on free ports, with the jars of the default home (already there, or copied once from
    the Maven cache): nothing is fetched again. No SASL_SSL listener (it is not what
    these tests are about, and it costs a TLS login per node at start). Stopped after."""
    from availability.local_kafka.broker import LocalKafka, Settings, ensure_jars

    libs = ensure_jars(Settings.from_env())
    home = tmp_path_factory.mktemp("kafka-cluster-home")
    kafka = LocalKafka(Settings(home=home, port=_free_cluster_port(3), heap="384m",
                                sasl_port=0, nodes=3, libs=libs), progress=print)
    try:
        bootstrap = kafka.start(timeout=180)
        yield LocalCluster(kafka, bootstrap, 3)
    finally:
        print(kafka.stop(timeout=30))


@pytest.fixture
def cluster_engine_factory(kafka_cluster: LocalCluster, tmp_path: Path
                           ) -> Iterator[Callable[..., EngineProcess]]:
    """As ``engine_factory``, with the engine reading from and writing to ``kafka_cluster``."""
    yield from _engines(kafka_cluster.bootstrap, tmp_path, "cluster-engine")
