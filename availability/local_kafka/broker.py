"""A real Apache Kafka (KRaft, combined broker+controller nodes) run from Maven jars.

Why: tests, the demo and the benchmarks need a genuine broker, and the machine has a JDK
and Maven but no Kafka distribution or Docker.  The jars are resolved from Maven Central
by ``pom.xml`` next to this file and copied once into ``<home>/kafka-<version>/libs``
(or taken from an existing jars dir, ``libs``); each JVM is then started detached (own
session), so it outlives the command that started it.

One node by default; ``nodes=N`` runs a cluster of N nodes instead, each a combined
broker+controller, all of them voters of the KRaft quorum (3 nodes: a majority of 2
survives the loss of one). Node ``n`` (0-based, Kafka ``node.id`` n + 1) listens on
node 0's ports plus ``n * NODE_PORT_STRIDE`` (10): with the defaults 9092/9093/9094,
9102/9103/9104, 9112/9113/9114.

Listeners of node 0, all on 127.0.0.1: PLAINTEXT on ``port`` (the default and
inter-broker one, what every command uses unless told otherwise), the KRaft controller
on ``port + 1`` and SASL_SSL with SCRAM-SHA-512 on ``port + 2`` (``sasl_port``; 0 turns
it off), for trying the clients against a secured Kafka; every node of a cluster has
the three, shifted by its stride. Its certificates and the SCRAM user's client
settings are made once per home (see ``security``; the certificate is for 127.0.0.1,
so it serves every node); after the brokers answer, start sets the user's credential
(cluster-wide, in the KRaft metadata) through the PLAINTEXT listener when the cluster
lacks it and logs in once over SASL_SSL on each node. If the listener cannot be had
(no `openssl`), the nodes start without it and say why; a failing SASL_SSL login is a
warning, not an error, as the PLAINTEXT listener works either way.

Layout under ``home`` ($AVAILABILITY_HOME, else ~/.cache/availability-engine, outside git):

    kafka-<version>/libs/       the jars (+ ``.complete`` marker once fully copied)
    security/                   CA, broker certificate, client-sasl-ssl.properties (0600)
    one node (``nodes=1``, the default):
    kafka-data/                 log.dirs (default; formatted once, when meta.properties is absent)
    kafka/server.properties     written on every launch (the running broker's truth;
                                mode 0600, it holds the TLS key)
    kafka/log4j2.properties     logging config, so the broker logs anything at all
    kafka.pid                   pid of the JVM we launched
    logs/server.log             broker log (INFO, rolling)
    logs/kafka.out              the JVM's stdout/stderr
    a cluster of N nodes, one directory per node n = 0 .. N-1:
    kafka-cluster-<N>/node-<n>/data/               log.dirs (``data_dir``: <data_dir>/node-<n>)
    kafka-cluster-<N>/node-<n>/server.properties   and log4j2.properties, as above
    kafka-cluster-<N>/node-<n>/kafka.pid
    kafka-cluster-<N>/node-<n>/logs/               server.log, kafka.out

A cluster's data never shares a directory with the one node's: a data dir is formatted
for one quorum (one voter, or N) and one cluster id, and cannot join another. The
internal topics of a cluster (consumer offsets, transactions, share state) get
replication factor min(3, N) and, from 3 nodes, min.insync.replicas 2 (the brokers'
default ``min.insync.replicas`` too, which the offsets topic takes), so a consumer
group survives the loss of a broker. A home runs one local Kafka at a time (one node
or one cluster); stop and status without ``nodes`` find which one runs.

Measured on the development machine (JDK 17, Maven cache ~/.m2 already warm, so "cold"
means a fresh, empty home dir, not a download from Maven Central):

    cold start (copy 46 jars ~2 s + format ~1 s + broker ready ~3 s):  ~6 s
    warm start (jars cached, storage formatted):                       3-4.5 s
    start when already running and answering (idempotent):             ~0.2 s
    SASL_SSL on top: certificates once ~0.1 s; credential + first
    login after the broker answers ~0.5 s (0.3-0.4 s when already set),
    so an idempotent start takes ~0.6 s and `status` ~0.4 s
    stop (SIGTERM, controlled shutdown):                               ~0.5 s
    3-node cluster (2 cores shared with other work, 3 JVMs starting at once):
    cold start 11-29 s, idempotent start ~1 s, stop (all at once) ~7 s;
    one node brought back after a SIGKILL ~22 s (the wait below)

A restart right after the JVM was SIGKILLed takes ~12 s instead: the controller refuses
the new registration (DUPLICATE_BROKER_REGISTRATION) until the dead session expires.
With an empty ~/.m2, Maven first downloads the jars (43 MB) from Maven Central (~10 s).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from availability.local_kafka.security import (
    LISTENER,
    SCRAM_MECHANISM,
    SCRAM_USER,
    Login,
    SecurityError,
    SecurityFiles,
    ensure_scram_user,
    ensure_security,
    sasl_login,
    set_scram_password,
)
from availability_contracts.errors import AvailabilityError
from availability_kafka.config import KafkaConfigError

POM = Path(__file__).with_name("pom.xml")
HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_HEAP = "1g"
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 30.0
QUORUM_LOST_GRACE = 15.0
"""Seconds a cluster node may take to exit once a majority of the nodes has stopped."""
DEFAULT_PARTITIONS = 4
SASL_PORT_OFFSET = 2  # port + 1 is the controller's
NODE_PORT_STRIDE = 10
"""Node n of a cluster listens on each of node 0's ports plus n * this."""
MAX_NODES = 9
CLUSTER_REPLICATION = 3
"""Replication factor of a cluster's internal topics (fewer with fewer nodes)."""
CLUSTER_MIN_INSYNC = 2
"""min.insync.replicas of a cluster of CLUSTER_REPLICATION nodes or more."""
MAIN_CLASS = "kafka.Kafka"
COMPLETE_MARKER = ".complete"

# Environment variables (documented in `availability kafka --help`).
ENV_HOME = "AVAILABILITY_HOME"
ENV_PORT = "AVAILABILITY_KAFKA_PORT"
ENV_CONTROLLER_PORT = "AVAILABILITY_KAFKA_CONTROLLER_PORT"
ENV_SASL_PORT = "AVAILABILITY_KAFKA_SASL_PORT"
ENV_DATA_DIR = "AVAILABILITY_KAFKA_DATA_DIR"
ENV_HEAP = "AVAILABILITY_KAFKA_HEAP"
ENV_START_TIMEOUT = "AVAILABILITY_KAFKA_START_TIMEOUT"
ENV_STOP_TIMEOUT = "AVAILABILITY_KAFKA_STOP_TIMEOUT"
ENV_NODES = "AVAILABILITY_KAFKA_NODES"
ENV_LIBS = "AVAILABILITY_KAFKA_LIBS"

Progress = Callable[[str], None]


def _pom_kafka_version() -> str:
    """The Kafka version pinned in pom.xml: one source of truth for jars and cache dir name."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    text = (node.text or "") if node is not None else ""
    if not text.strip():
        raise RuntimeError(f"no <kafka.version> property in {POM}")
    return text.strip()


KAFKA_VERSION = _pom_kafka_version()


class LocalKafkaError(AvailabilityError):
    """The local broker could not be fetched, started or stopped; ``details`` is log context."""

    code = "local_kafka"

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def default_home() -> Path:
    """State dir: $AVAILABILITY_HOME, else ~/.cache/availability-engine (never inside git)."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "availability-engine"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise LocalKafkaError(f"${name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise LocalKafkaError(f"${name} must be a number, got {raw!r}") from exc


def _nodes_word(nodes: int) -> str:
    """"single-node" or "3-node cluster", as in "the 3-node cluster"."""
    return "single node" if nodes == 1 else f"{nodes}-node cluster"


@dataclass(frozen=True)
class Node:
    """One broker+controller process of the local Kafka: where it listens and keeps
    its files. Made by :meth:`Settings.node`."""

    index: int
    """0 .. nodes - 1; Kafka's ``node.id`` is index + 1."""
    nodes: int
    """How many nodes the cluster it belongs to has (1: the single node)."""
    port: int
    ctrl_port: int
    sasl_port: int | None
    data_path: Path
    conf_dir: Path
    pid_file: Path
    logs_dir: Path

    @property
    def node_id(self) -> int:
        return self.index + 1

    @property
    def name(self) -> str:
        return f"node {self.index} (id {self.node_id})"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        return f"{HOST}:{self.sasl_port}" if self.sasl_port is not None else None

    @property
    def ports(self) -> list[int]:
        """Every port the node listens on."""
        extra = [self.sasl_port] if self.sasl_port is not None else []
        return [self.port, self.ctrl_port, *extra]

    @property
    def server_properties(self) -> Path:
        return self.conf_dir / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.conf_dir / "log4j2.properties"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.logs_dir / "kafka.out"


@dataclass(frozen=True)
class Settings:
    """Where and how the local Kafka runs. ``None`` fields derive from the others.

    The port and path properties here are those of the single node (``nodes=1``);
    :meth:`layout` gives every node of a cluster.
    """

    home: Path = field(default_factory=default_home)
    port: int = DEFAULT_PORT
    controller_port: int | None = None  # default: port + 1
    data_dir: Path | None = None  # default: <home>/kafka-data
    heap: str = DEFAULT_HEAP
    partitions: int = DEFAULT_PARTITIONS
    sasl_port: int | None = None  # SASL_SSL listener; default: port + 2; 0: none
    nodes: int | None = None
    """Nodes to run; None: the local Kafka that runs from ``home``, else one node."""
    libs: Path | None = None
    """A directory of Kafka jars to use as they are (never fetched), e.g. another home's
    ``kafka-<version>/libs``; None: ``<home>/kafka-<version>/libs``, fetched if missing."""

    def __post_init__(self) -> None:
        # Absolute paths: the pid check matches the JVM's command line, whatever the cwd.
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())
        for name in ("data_dir", "libs"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser().absolute())

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the AVAILABILITY_* environment; non-None ``overrides`` win."""
        data_dir = os.environ.get(ENV_DATA_DIR)
        libs = os.environ.get(ENV_LIBS)
        ctrl = os.environ.get(ENV_CONTROLLER_PORT)
        sasl = os.environ.get(ENV_SASL_PORT)
        nodes = os.environ.get(ENV_NODES)
        base = cls(
            home=default_home(),
            port=_env_int(ENV_PORT, DEFAULT_PORT),
            controller_port=_env_int(ENV_CONTROLLER_PORT, 0) if ctrl else None,
            sasl_port=_env_int(ENV_SASL_PORT, 0) if sasl else None,
            data_dir=Path(data_dir).expanduser() if data_dir else None,
            heap=os.environ.get(ENV_HEAP) or DEFAULT_HEAP,
            nodes=_env_int(ENV_NODES, 1) if nodes else None,
            libs=Path(libs).expanduser() if libs else None,
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(base, **given)  # type: ignore[arg-type]

    @property
    def ctrl_port(self) -> int:
        return self.controller_port if self.controller_port is not None else self.port + 1

    @property
    def sasl_ssl_port(self) -> int | None:
        """Port of the SASL_SSL listener, None when it is turned off (``sasl_port=0``)."""
        if self.sasl_port is None:
            return self.port + SASL_PORT_OFFSET
        return self.sasl_port or None

    @property
    def sasl_bootstrap(self) -> str | None:
        port = self.sasl_ssl_port
        return f"{HOST}:{port}" if port is not None else None

    @property
    def ports(self) -> list[int]:
        """Every port the broker listens on."""
        extra = [self.sasl_ssl_port] if self.sasl_ssl_port is not None else []
        return [self.port, self.ctrl_port, *extra]

    @property
    def security_dir(self) -> Path:
        return self.home / "security"

    @property
    def client_config(self) -> Path:
        """Client settings (SASL_SSL, SCRAM-SHA-512 user, CA) for the SASL_SSL listener."""
        return SecurityFiles(self.security_dir).client_config

    @property
    def data_path(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home / "kafka-data"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def kafka_dir(self) -> Path:
        return self.home / f"kafka-{KAFKA_VERSION}"

    @property
    def libs_dir(self) -> Path:
        return self.libs if self.libs is not None else self.kafka_dir / "libs"

    @property
    def conf_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def server_properties(self) -> Path:
        return self.conf_dir / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.conf_dir / "log4j2.properties"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.logs_dir / "kafka.out"

    # -- clusters

    def cluster_dir(self, nodes: int) -> Path:
        """Where a cluster of ``nodes`` (> 1) keeps its nodes' directories."""
        return self.home / f"kafka-cluster-{nodes}"

    def node(self, index: int, nodes: int) -> Node:
        """Node ``index`` of a local Kafka of ``nodes`` nodes; node 0 of one node is the
        single broker above, unchanged."""
        if nodes == 1:
            return Node(0, 1, self.port, self.ctrl_port, self.sasl_ssl_port, self.data_path,
                        self.conf_dir, self.pid_file, self.logs_dir)
        base = self.cluster_dir(nodes) / f"node-{index}"
        shift = index * NODE_PORT_STRIDE
        sasl = self.sasl_ssl_port
        data = self.data_dir / f"node-{index}" if self.data_dir is not None else base / "data"
        return Node(index, nodes, self.port + shift, self.ctrl_port + shift,
                    None if sasl is None else sasl + shift, data, base, base / "kafka.pid",
                    base / "logs")

    def layout(self, nodes: int) -> list[Node]:
        return [self.node(index, nodes) for index in range(nodes)]

    def cluster_sizes(self) -> list[int]:
        """1 and the size of every cluster that has a directory in ``home``."""
        sizes = set()
        with contextlib.suppress(OSError):
            for path in self.home.glob("kafka-cluster-*"):
                match = re.fullmatch(r"kafka-cluster-(\d+)", path.name)
                if match and path.is_dir() and int(match.group(1)) > 1:
                    sizes.add(int(match.group(1)))
        return [1, *sorted(sizes)]


@dataclass(frozen=True)
class BrokerStatus:
    """What `status` found about one node. ``running`` means our JVM is alive;
    ``answering`` that it serves."""

    running: bool
    answering: bool
    pid: int | None
    port: int | None
    bootstrap: str | None
    reason: str
    log: Path
    sasl_bootstrap: str | None = None
    """The running broker's SASL_SSL listener, None when it has none."""
    sasl_answering: bool | None = None
    """Whether the SCRAM user's login there works; None when not tried."""
    sasl_reason: str = ""
    client_config: Path | None = None
    """Client settings file of the SCRAM user (the path only: it holds the password)."""
    node: Node | None = None
    """Which node, when it belongs to a cluster."""

    @property
    def ok(self) -> bool:
        return self.running and self.answering and self.sasl_answering is not False

    def describe(self) -> str:
        if self.node is not None and self.node.nodes > 1:
            if self.running:
                state = "answering" if self.answering else "NOT answering (starting or wedged)"
                return (f"{self.node.name}: running, pid {self.pid}, {self.bootstrap}, {state}; "
                        f"{self.describe_sasl()}; log: {self.log}")
            return f"{self.node.name}: not running: {self.reason}"
        if self.running:
            state = "answering" if self.answering else "NOT answering (starting or wedged)"
            return (
                f"Kafka {KAFKA_VERSION} running: pid {self.pid}, {self.bootstrap}, {state}; "
                f"{self.describe_sasl()}; log: {self.log}"
            )
        return f"Kafka not running: {self.reason}"

    def describe_sasl(self) -> str:
        if self.sasl_bootstrap is None:
            return f"no {LISTENER} listener" + (f" ({self.sasl_reason})" if self.sasl_reason
                                                else "")
        if self.sasl_answering is None:
            state = ""
        elif self.sasl_answering:
            state = ", answering"
        else:
            state = f", login NOT working: {self.sasl_reason}"
        return (f"{LISTENER} ({SCRAM_MECHANISM}, user {SCRAM_USER}) at {self.sasl_bootstrap}"
                f"{state}; client settings: {self.client_config}")


@dataclass(frozen=True)
class ClusterView:
    """The cluster as one answering node's metadata shows it."""

    brokers: tuple[int, ...]
    """Node ids of the registered brokers (a killed one stays listed until its session
    expires, ``broker.session.timeout.ms``, 9 s)."""
    under_replicated: int
    """Partitions whose in-sync replicas are fewer than their replicas."""
    partitions: int


@dataclass(frozen=True)
class ClusterStatus:
    """What `status` found about a cluster of several nodes: each node, and the cluster
    as its metadata shows it (None when no node answers). Has the attributes of a
    :class:`BrokerStatus` (``running``: any node runs; the rest: node 0's, or the
    whole cluster's for ``bootstrap``, ``answering`` and ``ok``)."""

    node_states: tuple[BrokerStatus, ...]
    view: ClusterView | None

    @property
    def nodes(self) -> int:
        return len(self.node_states)

    @property
    def running(self) -> bool:
        return any(s.running for s in self.node_states)

    @property
    def complete(self) -> bool:
        """Every node's broker is registered with the cluster."""
        return self.view is not None and len(self.view.brokers) == self.nodes

    @property
    def answering(self) -> bool:
        return all(s.answering for s in self.node_states) and self.complete

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.node_states) and self.complete

    @property
    def pid(self) -> int | None:
        return self.node_states[0].pid

    @property
    def port(self) -> int | None:
        return self.node_states[0].port

    @property
    def bootstrap(self) -> str | None:
        """Every running node's PLAINTEXT address, comma-separated."""
        found = [s.bootstrap for s in self.node_states if s.bootstrap]
        return ",".join(found) if found else None

    @property
    def sasl_bootstrap(self) -> str | None:
        found = [s.sasl_bootstrap for s in self.node_states if s.sasl_bootstrap]
        return ",".join(found) if found else None

    @property
    def sasl_answering(self) -> bool | None:
        tried = [s.sasl_answering for s in self.node_states if s.sasl_answering is not None]
        return all(tried) if tried else None

    @property
    def sasl_reason(self) -> str:
        return "; ".join(f"node {i}: {s.sasl_reason}" for i, s in enumerate(self.node_states)
                         if s.sasl_reason)

    @property
    def client_config(self) -> Path | None:
        return next((s.client_config for s in self.node_states if s.client_config), None)

    @property
    def reason(self) -> str:
        return "; ".join(f"node {i}: {s.reason}" for i, s in enumerate(self.node_states)
                         if s.reason)

    @property
    def log(self) -> Path:
        return self.node_states[0].log

    def describe_sasl(self) -> str:
        return "; ".join(f"node {i}: {s.describe_sasl()}"
                         for i, s in enumerate(self.node_states))

    def describe(self) -> str:
        running = sum(s.running for s in self.node_states)
        if not running:
            head = f"Kafka {_nodes_word(self.nodes)} not running"
        else:
            head = (f"Kafka {KAFKA_VERSION} {_nodes_word(self.nodes)}: {running} of "
                    f"{self.nodes} nodes running")
            if self.view is None:
                head += ", none answering"
            else:
                v = self.view
                head += (f", {len(v.brokers)} of {self.nodes} brokers registered (ids "
                         f"{', '.join(map(str, v.brokers)) or 'none'}), "
                         f"{v.under_replicated} of {v.partitions} partitions under-replicated")
            head += f"; bootstrap {self.bootstrap}"
        return "\n".join([head, *(f"  {s.describe()}" for s in self.node_states)])


KafkaStatus = BrokerStatus | ClusterStatus


# --------------------------------------------------------------------------- helpers


def _which(tool: str, env_home: str | None = None) -> str:
    """Find a tool, preferring $JAVA_HOME/bin/java for java, with a clear error otherwise."""
    if env_home:
        home = os.environ.get(env_home)
        if home and os.access(Path(home) / "bin" / tool, os.X_OK):
            return str(Path(home) / "bin" / tool)
    found = shutil.which(tool)
    if not found:
        hint = {
            "java": "install a JDK 17+ (e.g. `apt-get install openjdk-17-jdk-headless`) "
            "or set JAVA_HOME",
            "mvn": "install Apache Maven (e.g. `apt-get install maven`); it fetches the "
            "Kafka jars from Maven Central",
        }[tool]
        raise LocalKafkaError(f"`{tool}` not found on PATH: {hint}")
    return found


def java_executable() -> str:
    return _which("java", "JAVA_HOME")


def _cluster_id() -> str:
    """base64url(uuid4) without padding, as Kafka's Uuid; never starting with '-' (CLI arg)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise start/stop/fetch across processes (e.g. pytest-xdist workers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(settings: Settings | None = None, progress: Progress | None = None) -> Path:
    """Copy Kafka's runtime jars into ``<home>/kafka-<version>/libs`` unless already complete.

    The ``.complete`` marker is written only after Maven succeeded, so an interrupted fetch
    is redone rather than leaving a broker that fails with NoClassDefFoundError.
    """
    settings = settings or Settings.from_env()
    if settings.libs is not None:
        return _given_libs(settings.libs)
    say = progress or (lambda _msg: None)
    kdir, libs = settings.kafka_dir, settings.libs_dir
    marker = kdir / COMPLETE_MARKER
    if marker.exists() and libs.is_dir():
        return libs
    with _locked(kdir / ".fetch.lock"):
        if marker.exists() and libs.is_dir():
            return libs
        mvn = _which("mvn")
        say(f"Fetching Kafka {KAFKA_VERSION} jars with Maven into {libs} ...")
        started = time.monotonic()
        staging = kdir / f"libs.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        jars = sorted(staging.glob("*.jar")) if staging.is_dir() else []
        if proc.returncode != 0 or not any(j.name.startswith("kafka_") for j in jars):
            shutil.rmtree(staging, ignore_errors=True)
            out = (proc.stdout + proc.stderr).strip()
            raise LocalKafkaError(
                f"Maven could not fetch the Kafka {KAFKA_VERSION} jars (exit {proc.returncode}); "
                "is Maven Central reachable (or ~/.m2 populated)?",
                details="\n".join(out.splitlines()[-30:]),
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        marker.write_text(f"{len(jars)} jars\n")
        say(f"Fetched {len(jars)} jars in {time.monotonic() - started:.1f} s")
        return libs


def _given_libs(libs: Path) -> Path:
    """An existing jars dir (``Settings.libs``), used as it is: never fetched into."""
    jar = f"kafka_2.13-{KAFKA_VERSION}.jar"
    if not (libs / jar).is_file():
        found = sorted(p.name for p in libs.glob("kafka_*.jar")) if libs.is_dir() else []
        raise LocalKafkaError(
            f"no {jar} in the jars dir {libs} (${ENV_LIBS} / --libs-dir)"
            + (f"; it holds {', '.join(found)}" if found else "")
            + f": point it at a `kafka-{KAFKA_VERSION}/libs` that `availability kafka start` "
            "fetched, or leave it unset to fetch the jars into the home"
        )
    return libs


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM does
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _tcp_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


_quiet_logger = logging.getLogger("availability.local_kafka.librdkafka")
_quiet_logger.addHandler(logging.NullHandler())
_quiet_logger.propagate = False


def kafka_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a metadata request to ``bootstrap`` succeeds and lists at least one broker."""
    host, _, port = bootstrap.rpartition(":")
    if host in ("127.0.0.1", "localhost") and not _tcp_open(int(port)):
        return False  # fail fast instead of letting librdkafka retry until the timeout
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "logger": _quiet_logger,
            "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
        }
    )
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # KafkaException on timeout / transport errors
        return False


def cluster_view(bootstrap: str, timeout: float = 5.0) -> ClusterView | None:
    """The registered brokers and under-replicated partitions that a metadata request to
    ``bootstrap`` returns; None when nothing answers. (Not the active controller: KRaft
    gives clients a random broker as the "controller".)"""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({
        "bootstrap.servers": bootstrap,
        "logger": _quiet_logger,
        "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
    })
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException on timeout / transport errors
        return None
    if not metadata.brokers:
        return None
    partitions = [p for topic in metadata.topics.values() for p in topic.partitions.values()]
    return ClusterView(tuple(sorted(metadata.brokers)),
                       sum(1 for p in partitions if len(p.isrs) < len(p.replicas)),
                       len(partitions))


def _port_owner(port: int) -> str:
    """Best-effort description of who listens on ``port`` (via `ss`), for error messages."""
    ss = shutil.which("ss")
    if ss:
        proc = subprocess.run(
            [ss, "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
        )
        users = re.findall(r'\("([^"]+)",pid=(\d+)', proc.stdout)
        if users:
            return ", ".join(f"{name} (pid {pid})" for name, pid in dict.fromkeys(users))
        if proc.stdout.strip():
            return "a process not visible to this user"
    return "another process"


def _describe_port_use(port: int) -> str:
    if kafka_answers(f"{HOST}:{port}", timeout=2.0):
        return f"another Kafka broker answers on {HOST}:{port} (not one started from this home)"
    return f"port {port} on {HOST} is in use by {_port_owner(port)}"


def _tail(path: Path, lines: int = 20, since: int = 0) -> str:
    """Last ``lines`` lines of ``path`` written after byte offset ``since``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(since, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_listeners(props: Path) -> dict[str, int]:
    """Listener name -> port the broker was launched with, from its server.properties."""
    try:
        text = props.read_text()
    except OSError:
        return {}
    match = re.search(r"^listeners=(.*)$", text, re.MULTILINE)
    if not match:
        return {}
    found = (re.fullmatch(r"\s*([A-Za-z0-9_]+)://[^,]*:(\d+)\s*", part)
             for part in match.group(1).split(","))
    return {m.group(1).upper(): int(m.group(2)) for m in found if m}


def _read_listener_port(props: Path, name: str = "PLAINTEXT") -> int | None:
    """The port of listener ``name`` the broker was launched with (PLAINTEXT by default)."""
    return _read_listeners(props).get(name)


# Popen objects of brokers started by this Python process, so we can reap them (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    """Alive and not a zombie; reaps our own exited children on the way."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True




def layout_problem(settings: Settings, nodes: int) -> str | None:
    """Why ``nodes`` nodes cannot listen where ``settings`` puts them (ports that
    overlap or exceed 65535), None when they can."""
    if not 1 <= nodes <= MAX_NODES:
        return f"the number of nodes must be 1 to {MAX_NODES}, got {nodes}"
    layout = settings.layout(nodes)
    ports = [port for node in layout for port in node.ports]
    if len(set(ports)) != len(ports):
        if nodes == 1:
            return (f"the broker, controller and {LISTENER} ports must differ, got "
                    f"{settings.port}, {settings.ctrl_port} and {settings.sasl_ssl_port}")
        return (f"the ports of the {nodes} nodes overlap ("
                + "; ".join(f"{n.name}: {', '.join(map(str, n.ports))}" for n in layout)
                + f"): node n listens on node 0's ports + {NODE_PORT_STRIDE}*n, so node 0's "
                f"ports must lie within a span of fewer than {NODE_PORT_STRIDE}")
    if max(ports) > 65535:
        return (f"node {nodes - 1}'s ports would go up to {max(ports)} (node n listens on "
                f"node 0's ports + {NODE_PORT_STRIDE}*n): choose a lower --port")
    return None


# --------------------------------------------------------------------------- one node


class _NodeProcess:
    """The JVM of one node: its pid file, config, storage, launch, readiness and stop."""

    def __init__(self, settings: Settings, node: Node, say: Progress) -> None:
        self.settings = settings
        self.node = node
        self._say = say
        self._log_offsets: dict[Path, int] = {}  # log sizes at our launch: tail only what's new

    @property
    def label(self) -> str:
        """How messages name this node: "Kafka" alone, or "node n (id m)" in a cluster."""
        return "Kafka" if self.node.nodes == 1 else self.node.name

    # -- pid bookkeeping

    def read_pid(self) -> int | None:
        try:
            return int(self.node.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_ours(self, pid: int) -> bool:
        """Alive, and (where /proc exists) really our kafka.Kafka with our config: pid reuse."""
        if not _alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return not Path("/proc/self").exists()
        except OSError:
            return True
        args = [a.decode("utf-8", "replace") for a in cmdline]
        return MAIN_CLASS in args and str(self.node.server_properties) in args

    def running_pid(self) -> tuple[int | None, str]:
        """(pid, "") when this node runs, else (None, why not)."""
        pid = self.read_pid()
        if pid is None:
            if self.node.pid_file.exists():
                return None, f"unreadable pid file {self.node.pid_file}"
            return None, f"no pid file ({self.node.pid_file})"
        if not self.is_ours(pid):
            return None, f"stale pid file: pid {pid} is not running our broker"
        return pid, ""

    # -- status

    def status(self, timeout: float) -> BrokerStatus:
        node = self.node
        shown = node if node.nodes > 1 else None
        pid, why = self.running_pid()
        if pid is None:
            busy = [p for p in node.ports if not _port_free(p)]
            if busy:
                why += "; " + "; ".join(_describe_port_use(p) for p in busy)
            return BrokerStatus(False, False, None, None, None, why, node.server_log,
                                node=shown)
        listeners = _read_listeners(node.server_properties)
        port = listeners.get("PLAINTEXT") or node.port
        bootstrap = f"{HOST}:{port}"
        answering = kafka_answers(bootstrap, timeout)
        sasl_port = listeners.get(LISTENER)
        if sasl_port is None:
            return BrokerStatus(True, answering, pid, port, bootstrap, "", node.server_log,
                                sasl_reason=self.no_listener_reason(), node=shown)
        sasl_bootstrap = f"{HOST}:{sasl_port}"
        login = self._try_login(sasl_bootstrap, timeout) if answering else None
        return BrokerStatus(
            True, answering, pid, port, bootstrap, "", node.server_log,
            sasl_bootstrap=sasl_bootstrap,
            sasl_answering=None if login is None else login.ok,
            sasl_reason="" if login is None else login.reason,
            client_config=self.settings.client_config, node=shown,
        )

    def no_listener_reason(self) -> str:
        """Why the running node has no SASL_SSL listener: the reason its start wrote
        into server.properties, else it predates the listener."""
        reason = "this broker was launched without it"
        with contextlib.suppress(OSError):
            text = self.node.server_properties.read_text()
            match = re.search(rf"^# no {LISTENER} listener: (.*)$", text, re.MULTILINE)
            if match:
                reason = match.group(1)
        if self.node.sasl_port is None:
            return reason
        return f"{reason}; `availability kafka stop` then `start` adds it"

    def _try_login(self, sasl_bootstrap: str, timeout: float) -> Login:
        files = SecurityFiles(self.settings.security_dir)
        try:
            settings = files.client_settings()
        except KafkaConfigError as exc:
            return Login(False, reason=str(exc))
        return sasl_login(sasl_bootstrap, settings, timeout)

    # -- start

    def check_running_ports(self, pid: int) -> dict[str, int]:
        """The listeners a running node was launched with; refuses other ports than asked."""
        s, node = self.settings, self.node
        listeners = _read_listeners(node.server_properties)
        where = s.home if node.nodes == 1 else node.conf_dir
        port = listeners.get("PLAINTEXT")
        if port is not None and port != node.port:
            raise LocalKafkaError(
                f"the broker from {where} already runs on port {port} (pid {pid}), "
                f"not {node.port}; stop it first or use another home"
            )
        sasl_port = listeners.get(LISTENER)
        if sasl_port is not None and node.sasl_port not in (None, sasl_port):
            raise LocalKafkaError(
                f"the broker from {where} already runs with {LISTENER} on port {sasl_port} "
                f"(pid {pid}), not {node.sasl_port}; stop it first or use another home"
            )
        return listeners

    def write_config(self, voters: str, files: SecurityFiles | None = None,
                     why_not: str = "") -> None:
        """server.properties (mode 0600: it holds the broker's TLS key when ``files``;
        without them, ``why_not`` is noted there for `status`). ``voters`` is the
        static quorum of a cluster (``controller.quorum.voters``); "" for one node,
        which has a dynamic quorum of itself."""
        node = self.node
        for d in (node.conf_dir, node.logs_dir, node.data_path):
            d.mkdir(parents=True, exist_ok=True)
        listeners = f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.ctrl_port}"
        advertised = f"PLAINTEXT://{HOST}:{node.port}"
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        secure = f"# no {LISTENER} listener: {why_not or 'turned off'}\n"
        if files is not None and node.sasl_port is not None:
            listeners += f",{LISTENER}://{HOST}:{node.sasl_port}"
            advertised += f",{LISTENER}://{HOST}:{node.sasl_port}"
            protocols += f",{LISTENER}:SASL_SSL"
            prefix = f"listener.name.{LISTENER.lower()}."
            secure = (
                f"# {LISTENER}: {SCRAM_MECHANISM} users (credentials in the KRaft metadata),\n"
                f"# TLS with the certificate in {files.directory} (PEM, inline).\n"
                f"{prefix}sasl.enabled.mechanisms={SCRAM_MECHANISM}\n"
                f"{prefix}{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
                f"{prefix}ssl.client.auth=none\n"
                f"{prefix}ssl.keystore.type=PEM\n"
                f"{prefix}ssl.keystore.certificate.chain={files.keystore_chain()}\n"
                f"{prefix}ssl.keystore.key={files.keystore_key()}\n"
            )
        if voters:
            quorum = f"controller.quorum.voters={voters}\n"
            replicas = min(CLUSTER_REPLICATION, node.nodes)
            min_isr = CLUSTER_MIN_INSYNC if node.nodes >= CLUSTER_REPLICATION else 1
            replication = (
                "# internal topics replicated so that a consumer group or a transaction\n"
                "# survives the loss of a broker (the offsets topic takes min.insync.replicas)\n"
                f"default.replication.factor={replicas}\n"
                f"min.insync.replicas={min_isr}\n"
                f"offsets.topic.replication.factor={replicas}\n"
                f"transaction.state.log.replication.factor={replicas}\n"
                f"transaction.state.log.min.isr={min_isr}\n"
                f"share.coordinator.state.topic.replication.factor={replicas}\n"
                f"share.coordinator.state.topic.min.isr={min_isr}\n"
            )
        else:
            quorum = f"controller.quorum.bootstrap.servers={HOST}:{node.ctrl_port}\n"
            replication = (
                "offsets.topic.replication.factor=1\n"
                "transaction.state.log.replication.factor=1\n"
                "transaction.state.log.min.isr=1\n"
                "share.coordinator.state.topic.replication.factor=1\n"
                "share.coordinator.state.topic.min.isr=1\n"
            )
        node.server_properties.touch(mode=0o600)
        node.server_properties.chmod(0o600)
        node.server_properties.write_text(
            "# Written by `availability kafka start` on every launch; edits are overwritten.\n"
            "process.roles=broker,controller\n"
            f"node.id={node.node_id}\n"
            f"{quorum}"
            f"listeners={listeners}\n"
            f"advertised.listeners={advertised}\n"
            "controller.listener.names=CONTROLLER\n"
            f"listener.security.protocol.map={protocols}\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            f"{secure}"
            f"log.dirs={node.data_path}\n"
            f"num.partitions={self.settings.partitions}\n"
            f"{replication}"
            "group.initial.rebalance.delay.ms=0\n"
        )
        node.log4j_config.write_text(
            "# Without a config log4j2 stays silent; the broker logs here instead.\n"
            "status = warn\n"
            "appender.file.type = RollingFile\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {node.server_log}\n"
            f"appender.file.filePattern = {node.logs_dir}/server.log.%i\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "appender.file.policies.type = Policies\n"
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
            "appender.file.policies.size.size = 50MB\n"
            "appender.file.strategy.type = DefaultRolloverStrategy\n"
            "appender.file.strategy.max = 3\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.request.name = kafka.request.logger\n"
            "logger.request.level = WARN\n"
        )

    def formatted_cluster_id(self) -> str | None:
        """The cluster id in the node's meta.properties, None when not formatted."""
        with contextlib.suppress(OSError):
            text = (self.node.data_path / "meta.properties").read_text()
            match = re.search(r"^cluster\.id=(.*)$", text, re.MULTILINE)
            if match:
                return match.group(1).strip()
        return None

    def format_once(self, java: str, libs: Path, cluster_id: str) -> None:
        """Format storage only when meta.properties is absent: formatting is not idempotent.
        One node formats itself as a dynamic quorum of one (``--standalone``); the nodes of
        a cluster share ``cluster_id`` and the static voters of their server.properties."""
        node = self.node
        if (node.data_path / "meta.properties").exists():
            return
        what = "" if node.nodes == 1 else f" of {node.name}"
        self._say(f"Formatting storage{what} in {node.data_path} (cluster id {cluster_id})")
        cmd = [
            java, f"-Dlog4j2.configurationFile={node.log4j_config}", "-cp", f"{libs}/*",
            "kafka.tools.StorageTool", "format", "-t", cluster_id,
            "-c", str(node.server_properties),
        ]  # fmt: skip
        if node.nodes == 1:
            cmd.append("--standalone")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LocalKafkaError(
                f"formatting {node.data_path} failed (exit {proc.returncode})",
                details=(proc.stdout + proc.stderr).strip(),
            )

    def launch(self, java: str, libs: Path) -> int:
        """Start the JVM detached and record its pid; does not wait for it."""
        s, node = self.settings, self.node
        cmd = [
            java, f"-Xmx{s.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.log4j_config}",
            f"-Dkafka.logs.dir={node.logs_dir}",
            "-Dlog4j2.shutdownHookEnabled=false",  # keep logging through Kafka's own shutdown
            "-cp", f"{libs}/*", MAIN_CLASS, str(node.server_properties),
        ]  # fmt: skip
        self._log_offsets = {p: _size(p) for p in (node.server_log, node.stdout_log)}
        with open(node.stdout_log, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=s.home,
                start_new_session=True,  # own session: survives the CLI and its Ctrl-C
                close_fds=True,
            )
        _children[proc.pid] = proc
        node.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def check_alive(self, pid: int) -> None:
        """Raise with the log's last lines when the JVM exited during startup."""
        node = self.node
        if not _alive(pid):
            node.pid_file.unlink(missing_ok=True)
            raise LocalKafkaError(
                f"{self.label} (pid {pid}) exited during startup; see {node.server_log} "
                f"and {node.stdout_log}",
                details=self.startup_log_tail(),
            )

    def startup_log_tail(self) -> str:
        """Last lines of both logs: a JVM that fails early writes only to kafka.out."""
        parts = []
        for path in (self.node.server_log, self.node.stdout_log):
            tail = _tail(path, since=self._log_offsets.get(path, 0))
            if tail.strip():
                parts.append(f"--- last lines of {path}\n{tail}")
        return "\n".join(parts)

    # -- stop

    def signal(self, pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def terminate(self, pid: int, timeout: float, signalled: bool = False) -> bool:
        """SIGTERM (unless ``signalled`` already), SIGKILL after ``timeout``; returns True
        when SIGKILL was needed."""
        if not signalled:
            self.signal(pid, signal.SIGTERM)
        if _wait_exit(pid, timeout):
            return False
        self.signal(pid, signal.SIGKILL)
        if not _wait_exit(pid, 10.0):
            raise LocalKafkaError(f"{self.label} (pid {pid}) survived SIGKILL")
        return True


def _bootstrap(procs: list[_NodeProcess]) -> str:
    return ",".join(proc.node.bootstrap for proc in procs)


def _await_exit(proc: _NodeProcess, pid: int, deadline: float) -> tuple[float, str]:
    """Waits for a SIGTERMed single node; returns (when it ended, how)."""
    killed = proc.terminate(pid, max(0.1, deadline - time.monotonic()), signalled=True)
    how = "killed with SIGKILL after SIGTERM timed out" if killed else "stopped"
    return time.monotonic(), how


def _await_cluster_exit(running: list[_NodeProcess], pids: dict[int, int],
                        deadline: float, nodes: int) -> dict[int, tuple[float, str]]:
    """Waits for SIGTERMed nodes; returns node index -> (when it ended, how).

    A node asks the controller quorum to approve its controlled shutdown. When a
    majority of the nodes has already exited, no quorum is left to answer, and Kafka
    would wait minutes before giving up: such a node is killed after
    ``QUORUM_LOST_GRACE`` (its logs are recovered at its next start)."""
    alive = {p.node.index: p for p in running}
    ended: dict[int, tuple[float, str]] = {}
    quorum_lost_at: float | None = None
    while alive:
        now = time.monotonic()
        for index in [i for i in alive if not _alive(pids[i])]:
            del alive[index]
            ended[index] = (now, "stopped")
        if not alive:
            break
        if quorum_lost_at is None and len(alive) <= nodes - (nodes // 2 + 1):
            quorum_lost_at = now
        grace_over = quorum_lost_at is not None and now - quorum_lost_at >= QUORUM_LOST_GRACE
        if grace_over or now >= deadline:
            how = (f"killed with SIGKILL {QUORUM_LOST_GRACE:.0f} s after a majority of the "
                   f"nodes had stopped (no controller quorum was left to approve its controlled "
                   f"shutdown; Kafka recovers its logs at the next start)"
                   if grace_over else "killed with SIGKILL after SIGTERM timed out")
            for index, proc in alive.items():
                proc.terminate(pids[index], 0.0, signalled=True)
                ended[index] = (time.monotonic(), how)
            break
        time.sleep(0.1)
    return ended


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


# --------------------------------------------------------------------------- the broker


class LocalKafka:
    """Start, stop and inspect the local Kafka described by ``settings``: one node, or a
    cluster of ``settings.nodes``. With ``nodes`` None, the one that runs from the home
    (one node when none runs).

    Safe to use from several processes at once: start/stop hold a lock file in ``home``.
    """

    def __init__(self, settings: Settings | None = None, progress: Progress | None = None):
        self.settings = settings or Settings.from_env()
        self._say: Progress = progress or (lambda _msg: None)
        self._procs: dict[tuple[int, int], _NodeProcess] = {}

    # -- which nodes

    @property
    def nodes(self) -> int:
        """How many nodes this local Kafka has: as asked, else what runs, else 1."""
        if self.settings.nodes is not None:
            return self.settings.nodes
        running = self.running_layouts()
        return running[0] if running else 1

    def layout(self, nodes: int | None = None) -> list[Node]:
        return self.settings.layout(self.nodes if nodes is None else nodes)

    def _proc(self, node: Node) -> _NodeProcess:
        key = (node.nodes, node.index)
        if key not in self._procs:
            self._procs[key] = _NodeProcess(self.settings, node, self._say)
        return self._procs[key]

    def processes(self, nodes: int | None = None) -> list[_NodeProcess]:
        return [self._proc(node) for node in self.layout(nodes)]

    def running_layouts(self) -> list[int]:
        """Sizes (1: the single node) of the local Kafkas with a node running from home."""
        return [size for size in self.settings.cluster_sizes()
                if any(p.running_pid()[0] is not None for p in self.processes(size))]

    def node_pids(self) -> dict[int, int]:
        """Node index -> pid of each running node (e.g. to kill one in a test)."""
        found = {}
        for proc in self.processes():
            pid, _ = proc.running_pid()
            if pid is not None:
                found[proc.node.index] = pid
        return found

    @property
    def bootstrap(self) -> str:
        """Every node's PLAINTEXT address, comma-separated (one node: just its own)."""
        return _bootstrap(self.processes())

    @property
    def sasl_bootstrap(self) -> str | None:
        found = [node.sasl_bootstrap for node in self.layout() if node.sasl_bootstrap]
        return ",".join(found) if found else None

    # -- status

    def status(self, timeout: float = 3.0) -> KafkaStatus:
        """Inspect without changing anything; explains why when not running. One node
        gives a :class:`BrokerStatus`, a cluster a :class:`ClusterStatus`."""
        procs = self.processes()
        if len(procs) == 1:
            return procs[0].status(timeout)
        states = tuple(proc.status(timeout) for proc in procs)
        view = None
        for state in states:
            if state.answering and state.bootstrap:
                view = cluster_view(state.bootstrap, timeout)
                if view is not None:
                    break
        return ClusterStatus(states, view)

    def _no_listener_reason(self) -> str:
        return self.processes()[0].no_listener_reason()

    # -- start

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> str:
        """Start (or find running) every node and wait until each answers and, for a
        cluster, every broker is registered; then until the SCRAM user logs in over
        SASL_SSL. Returns the PLAINTEXT bootstrap (comma-separated for a cluster).

        Idempotent: running nodes are left as they are and only the missing ones
        launched, so it also brings a lost node of a cluster back."""
        s = self.settings
        with _locked(s.home / ".kafka.lock"):
            nodes = self.nodes
            others = [n for n in self.running_layouts() if n != nodes]
            if others:
                other = self.processes(others[0])
                pids = [pid for pid in (p.running_pid()[0] for p in other) if pid is not None]
                raise LocalKafkaError(
                    f"the {_nodes_word(others[0])} of {s.home} runs (pid "
                    f"{', '.join(map(str, pids))}); one local Kafka per home: "
                    f"`availability kafka stop` first, or use another --home"
                )
            procs = self.processes(nodes)
            running = {p.node.index: pid for p in procs
                       if (pid := p.running_pid()[0]) is not None}
            if s.nodes is None and not running:
                for size in s.cluster_sizes()[1:]:
                    self._say(f"note: {s.cluster_dir(size)} holds a {_nodes_word(size)}; "
                              f"`availability kafka start --nodes {size}` starts that instead")
            if len(running) == nodes:
                return self._already_running(procs, running, timeout)
            return self._launch_missing(procs, running, timeout)

    def _check_ports(self, procs: list[_NodeProcess], running: dict[int, int]) -> None:
        nodes = [p.node for p in procs]
        problem = layout_problem(self.settings, len(nodes))
        if problem:
            raise LocalKafkaError(problem)
        for proc in procs:
            if proc.node.index in running:
                proc.check_running_ports(running[proc.node.index])
                continue
            for port in proc.node.ports:
                if not _port_free(port):
                    where = "" if len(nodes) == 1 else f"{proc.node.name} "
                    raise LocalKafkaError(
                        f"cannot start {where}on port {port}: {_describe_port_use(port)}"
                    )

    def _launch_missing(self, procs: list[_NodeProcess], running: dict[int, int],
                        timeout: float) -> str:
        s = self.settings
        nodes = len(procs)
        for proc in procs:
            if proc.node.index not in running and proc.node.pid_file.exists():
                _, why = proc.running_pid()
                self._say(f"Removing {why}" if nodes == 1 else f"{proc.node.name}: removing {why}")
                proc.node.pid_file.unlink(missing_ok=True)
        java = java_executable()
        self._check_ports(procs, running)
        libs = ensure_jars(s, self._say)
        sasl_bootstrap = ",".join(p.node.sasl_bootstrap for p in procs
                                  if p.node.sasl_bootstrap) or None
        files, why_not = self._prepare_security(sasl_bootstrap)
        voters = "" if nodes == 1 else ",".join(
            f"{p.node.node_id}@{HOST}:{p.node.ctrl_port}" for p in procs)
        missing = [p for p in procs if p.node.index not in running]
        for proc in missing:
            proc.write_config(voters, files, why_not)
        cluster_id = next((cid for p in procs if (cid := p.formatted_cluster_id())), None)
        cluster_id = cluster_id or _cluster_id()
        with ThreadPoolExecutor(len(missing)) as pool:  # a JVM each: at once, not in turn
            list(pool.map(lambda proc: proc.format_once(java, libs, cluster_id), missing))
        started = time.monotonic()
        launched: dict[int, int] = {}
        try:
            for proc in missing:
                pid = proc.launch(java, libs)
                launched[proc.node.index] = pid
                if nodes == 1:
                    self._say(f"Started Kafka {KAFKA_VERSION} (pid {pid}) on "
                              f"{proc.node.bootstrap}; waiting up to {timeout:.0f} s; log: "
                              f"{proc.node.server_log}")
                else:
                    self._say(f"Started {proc.node.name} (pid {pid}) on "
                              f"{proc.node.bootstrap}; log: {proc.node.server_log}")
            if nodes > 1:
                self._say(f"Waiting up to {timeout:.0f} s for the {nodes} nodes to answer "
                          "and register")
            self._wait_ready(procs, {**running, **launched}, started, timeout)
        except BaseException:
            for proc in missing:
                gone = launched.get(proc.node.index)
                if gone is not None and _alive(gone):
                    proc.terminate(gone, DEFAULT_STOP_TIMEOUT)
                    proc.node.pid_file.unlink(missing_ok=True)
            raise
        if files is not None and sasl_bootstrap is not None:
            self._ensure_sasl(files, _bootstrap(procs), [p.node.sasl_bootstrap for p in procs
                                                         if p.node.sasl_bootstrap], timeout)
        return _bootstrap(procs)

    def _wait_ready(self, procs: list[_NodeProcess], pids: dict[int, int], started: float,
                    timeout: float, quiet: bool = False) -> None:
        """Until every node answers a metadata request and, for a cluster, lists all the
        brokers as registered; raises with the log tail of a node that died or did not
        answer in time (the caller stops the nodes it launched)."""
        deadline = started + timeout
        waiting = {p.node.index: p for p in procs}
        view: ClusterView | None = None
        while True:
            for index, proc in list(waiting.items()):
                proc.check_alive(pids[index])
                if kafka_answers(proc.node.bootstrap, timeout=1.0):
                    del waiting[index]
                    took = time.monotonic() - started
                    if len(procs) == 1:
                        self._say(f"Kafka ready at {proc.node.bootstrap} after {took:.1f} s")
                    elif not quiet:
                        self._say(f"{proc.node.name} answers at {proc.node.bootstrap} "
                                  f"after {took:.1f} s")
            if not waiting:
                if len(procs) == 1:
                    return
                view = cluster_view(_bootstrap(procs), timeout=2.0)
                if view is not None and len(view.brokers) == len(procs):
                    self._say(
                        f"Kafka {KAFKA_VERSION} {_nodes_word(len(procs))} ready at "
                        f"{_bootstrap(procs)} after {time.monotonic() - started:.1f} s: brokers "
                        f"{', '.join(map(str, view.brokers))} registered")
                    return
            if time.monotonic() >= deadline:
                late = list(waiting.values())
                if not late:
                    registered = "none" if view is None else ", ".join(map(str, view.brokers))
                    raise LocalKafkaError(
                        f"the {len(procs)} nodes answer but not all their brokers registered "
                        f"within {timeout:.0f} s (registered: {registered}); see "
                        + ", ".join(str(p.node.server_log) for p in procs),
                        details="\n".join(p.startup_log_tail() for p in procs),
                    )
                proc = late[0]
                what = "Kafka" if len(procs) == 1 else proc.node.name
                raise LocalKafkaError(
                    f"{what} (pid {pids[proc.node.index]}) did not answer on "
                    f"{proc.node.bootstrap} within {timeout:.0f} s; stopped it. "
                    f"See {proc.node.server_log}",
                    details=proc.startup_log_tail(),
                )
            time.sleep(0.25)

    def _already_running(self, procs: list[_NodeProcess], pids: dict[int, int],
                         timeout: float) -> str:
        listeners = {p.node.index: p.check_running_ports(pids[p.node.index]) for p in procs}
        if len(procs) == 1:
            pid, bootstrap = pids[0], procs[0].node.bootstrap
            if kafka_answers(bootstrap, timeout=min(5.0, timeout)):
                self._say(f"Kafka already running (pid {pid}) and answering at {bootstrap}")
            else:
                self._say(f"Kafka already running (pid {pid}) but not answering yet; "
                          "waiting ...")
                self._wait_ready(procs, pids, time.monotonic(), timeout)
        else:
            self._say(f"Kafka {_nodes_word(len(procs))} already running (pids "
                      f"{', '.join(str(pids[p.node.index]) for p in procs)})")
            self._wait_ready(procs, pids, time.monotonic(), timeout, quiet=True)
        sasl = [f"{HOST}:{port}" for index in sorted(listeners)
                if (port := listeners[index].get(LISTENER)) is not None]
        if not sasl:
            if procs[0].node.sasl_port is not None:
                self._say(f"note: no {LISTENER} listener: {procs[0].no_listener_reason()}")
            return _bootstrap(procs)
        files, _ = self._prepare_security(",".join(sasl), launching=False)
        if files is not None:
            self._ensure_sasl(files, _bootstrap(procs), sasl, timeout)
        return _bootstrap(procs)

    def _prepare_security(self, sasl_bootstrap: str | None, launching: bool = True
                          ) -> tuple[SecurityFiles | None, str]:
        """The SASL_SSL listener's files, made if missing (certificates are renewed only
        when ``launching``); else None and why not (also said as a warning): the broker
        then starts with its PLAINTEXT listener alone."""
        if sasl_bootstrap is None:
            return None, "turned off"
        directory = self.settings.security_dir
        try:
            files, made = ensure_security(directory, sasl_bootstrap, certificates=launching)
        except (SecurityError, OSError) as exc:
            details = getattr(exc, "details", "")
            self._say(f"warning: no {LISTENER} listener: {exc}" + (f"\n{details}" if details
                                                                     else ""))
            return None, " ".join(str(exc).split())
        if made:
            self._say(f"Made {' and '.join(made)} in {directory}")
        return files, ""

    def _write_config(self, files: SecurityFiles | None = None, why_not: str = "") -> None:
        """server.properties of every node (see :meth:`_NodeProcess.write_config`)."""
        procs = self.processes()
        voters = "" if len(procs) == 1 else ",".join(
            f"{p.node.node_id}@{HOST}:{p.node.ctrl_port}" for p in procs)
        for proc in procs:
            proc.write_config(voters, files, why_not)

    def _ensure_sasl(self, files: SecurityFiles, plaintext: str, sasl_bootstraps: list[str],
                     timeout: float) -> bool:
        """Make sure the SCRAM user can log in on the SASL_SSL listener of every node:
        set its credential (cluster-wide) through the PLAINTEXT listener when it has none
        (a fresh data dir) or another password (a new client file), then log in once on
        each node. Only warns on failure: the PLAINTEXT listener, which everything else
        uses, is up either way."""
        started = time.monotonic()
        deadline = started + min(timeout, 30.0)
        password = files.password()
        updated = False
        shown = ",".join(sasl_bootstraps)
        failed: tuple[str, Login] | None = None
        try:
            settings = files.client_settings()
            if password is None:
                raise SecurityError(f"no sasl.password in {files.client_config}")
            updated = ensure_scram_user(plaintext, password)
            for sasl_bootstrap in sasl_bootstraps:
                login = sasl_login(sasl_bootstrap, settings,
                                   max(1.0, deadline - time.monotonic()))
                if login.auth_refused and not updated:
                    set_scram_password(plaintext, password)
                    updated = True
                while login.auth_refused and updated and time.monotonic() < deadline:
                    time.sleep(0.1)  # the new credential reaches the listener a moment later
                    login = sasl_login(sasl_bootstrap, settings,
                                       max(1.0, deadline - time.monotonic()))
                if not login.ok:
                    failed = (sasl_bootstrap, login)
                    break
        except Exception as exc:  # KafkaException, KafkaConfigError, SecurityError
            failed = (shown, Login(False, reason=str(exc)))
        if failed is None:
            what = "credential set, " if updated else ""
            self._say(
                f"{LISTENER} ({SCRAM_MECHANISM}, user {SCRAM_USER}) ready at {shown} "
                f"({what}{time.monotonic() - started:.1f} s); client settings: "
                f"{files.client_config}"
            )
            return True
        where, login = failed
        hint = (" (its certificate is not the one in security/: `availability kafka stop` "
                "then `start`)" if login.tls_failed else "")
        self._say(
            f"warning: the {LISTENER} listener at {where} does not work: "
            f"{login.reason}{hint}; the PLAINTEXT listener at {plaintext} does"
        )
        return False

    # -- stop

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> str:
        """SIGTERM (controlled shutdown) to every node at once, SIGKILL after ``timeout``;
        returns what happened. With ``nodes`` None, stops whatever runs from the home."""
        s = self.settings
        with _locked(s.home / ".kafka.lock"):
            sizes = [s.nodes] if s.nodes is not None else (self.running_layouts() or [1])
            said = [self._stop_layout(size, timeout) for size in sizes]
            if s.nodes is not None:
                others = [n for n in self.running_layouts() if n != s.nodes]
                if others:
                    said.append(f"note: the {_nodes_word(others[0])} of {s.home} runs; "
                                f"`availability kafka stop` without --nodes stops it")
            return "\n".join(said)

    def _stop_layout(self, nodes: int, timeout: float) -> str:
        procs = self.processes(nodes)
        pids: dict[int, int] = {}
        lines: list[str] = []
        for proc in procs:
            pid, why = proc.running_pid()
            if pid is not None:
                pids[proc.node.index] = pid
                continue
            label = "Kafka" if nodes == 1 else proc.node.name
            if proc.node.pid_file.exists():
                proc.node.pid_file.unlink(missing_ok=True)
                lines.append(f"{label} not running: {why}; removed the pid file")
            else:
                lines.append(f"{label} not running: {why}")
        if not pids:
            if nodes == 1:
                return lines[0]
            return f"Kafka {_nodes_word(nodes)} not running:\n  " + "\n  ".join(lines)
        running = [p for p in procs if p.node.index in pids]
        if nodes == 1:
            self._say(f"Stopping Kafka (pid {pids[0]}) ...")
        else:
            self._say(f"Stopping the {_nodes_word(nodes)} (pids "
                      f"{', '.join(str(pids[p.node.index]) for p in running)}) ...")
        started = time.monotonic()
        for proc in running:  # all at once: each node's controlled shutdown needs a quorum
            proc.signal(pids[proc.node.index], signal.SIGTERM)
        if nodes == 1:
            outcomes = {0: _await_exit(running[0], pids[0], started + timeout)}
        else:
            outcomes = _await_cluster_exit(running, pids, started + timeout, nodes)
        done: list[str] = []
        for proc in running:
            took, how = outcomes[proc.node.index]
            proc.node.pid_file.unlink(missing_ok=True)
            label = "Kafka" if nodes == 1 else proc.node.name
            done.append(f"{label} (pid {pids[proc.node.index]}) {how} in {took - started:.1f} s")
        if nodes == 1:
            return done[0]
        return (f"Kafka {_nodes_word(nodes)} stopped in {time.monotonic() - started:.1f} s:\n  "
                + "\n  ".join(done + lines))
