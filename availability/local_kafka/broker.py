"""A real single-node Apache Kafka (KRaft, combined broker+controller) run from Maven jars.

Why: tests, the demo and the benchmarks need a genuine broker, and the machine has a JDK
and Maven but no Kafka distribution or Docker.  The jars are resolved from Maven Central
by ``pom.xml`` next to this file and copied once into ``<home>/kafka-<version>/libs``;
the JVM is then started detached (own session), so it outlives the command that started it.

Listeners, all on 127.0.0.1: PLAINTEXT on ``port`` (the default and inter-broker one,
what every command uses unless told otherwise), the KRaft controller on ``port + 1`` and
SASL_SSL with SCRAM-SHA-512 on ``port + 2`` (``sasl_port``; 0 turns it off), for trying
the clients against a secured Kafka. Its certificates and the SCRAM user's client
settings are made once per home (see ``security``); after the broker answers, start sets
the user's credential through the PLAINTEXT listener when the data dir lacks it and
logs in once over SASL_SSL. If the listener cannot be had (no `openssl`), the broker
starts without it and says why; a failing SASL_SSL login is a warning, not an error,
as the PLAINTEXT listener works either way.

Layout under ``home`` ($AVAILABILITY_HOME, else ~/.cache/availability-engine, outside git):

    kafka-<version>/libs/       the jars (+ ``.complete`` marker once fully copied)
    kafka-data/                 log.dirs (default; formatted once, when meta.properties is absent)
    kafka/server.properties     written on every launch (the running broker's truth;
                                mode 0600, it holds the TLS key)
    security/                   CA, broker certificate, client-sasl-ssl.properties (0600)
    kafka/log4j2.properties     logging config, so the broker logs anything at all
    kafka.pid                   pid of the JVM we launched
    logs/server.log             broker log (INFO, rolling)
    logs/kafka.out              the JVM's stdout/stderr

Measured on the development machine (JDK 17, Maven cache ~/.m2 already warm, so "cold"
means a fresh, empty home dir, not a download from Maven Central):

    cold start (copy 46 jars ~2 s + format ~1 s + broker ready ~3 s):  ~6 s
    warm start (jars cached, storage formatted):                       3-4.5 s
    start when already running and answering (idempotent):             ~0.2 s
    SASL_SSL on top: certificates once ~0.1 s; credential + first
    login after the broker answers ~0.5 s (0.3-0.4 s when already set),
    so an idempotent start takes ~0.6 s and `status` ~0.4 s
    stop (SIGTERM, controlled shutdown):                               ~0.5 s

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
DEFAULT_PARTITIONS = 4
SASL_PORT_OFFSET = 2  # port + 1 is the controller's
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


@dataclass(frozen=True)
class Settings:
    """Where and how the local broker runs. ``None`` fields derive from the others."""

    home: Path = field(default_factory=default_home)
    port: int = DEFAULT_PORT
    controller_port: int | None = None  # default: port + 1
    data_dir: Path | None = None  # default: <home>/kafka-data
    heap: str = DEFAULT_HEAP
    partitions: int = DEFAULT_PARTITIONS
    sasl_port: int | None = None  # SASL_SSL listener; default: port + 2; 0: none

    def __post_init__(self) -> None:
        # Absolute paths: the pid check matches the JVM's command line, whatever the cwd.
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the AVAILABILITY_* environment; non-None ``overrides`` win."""
        data_dir = os.environ.get(ENV_DATA_DIR)
        ctrl = os.environ.get(ENV_CONTROLLER_PORT)
        sasl = os.environ.get(ENV_SASL_PORT)
        base = cls(
            home=default_home(),
            port=_env_int(ENV_PORT, DEFAULT_PORT),
            controller_port=_env_int(ENV_CONTROLLER_PORT, 0) if ctrl else None,
            sasl_port=_env_int(ENV_SASL_PORT, 0) if sasl else None,
            data_dir=Path(data_dir).expanduser() if data_dir else None,
            heap=os.environ.get(ENV_HEAP) or DEFAULT_HEAP,
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
        return self.kafka_dir / "libs"

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


@dataclass(frozen=True)
class BrokerStatus:
    """What `status` found. ``running`` means our JVM is alive; ``answering`` that it serves."""

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

    @property
    def ok(self) -> bool:
        return self.running and self.answering and self.sasl_answering is not False

    def describe(self) -> str:
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


# --------------------------------------------------------------------------- the broker


class LocalKafka:
    """Start, stop and inspect the local single-node broker described by ``settings``.

    Safe to use from several processes at once: start/stop hold a lock file in ``home``.
    """

    def __init__(self, settings: Settings | None = None, progress: Progress | None = None):
        self.settings = settings or Settings.from_env()
        self._say: Progress = progress or (lambda _msg: None)
        self._log_offsets: dict[Path, int] = {}  # log sizes at our launch: tail only what's new

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    # -- pid bookkeeping

    def _read_pid(self) -> int | None:
        try:
            return int(self.settings.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _is_ours(self, pid: int) -> bool:
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
        return MAIN_CLASS in args and str(self.settings.server_properties) in args

    def _running_pid(self) -> tuple[int | None, str]:
        """(pid, "") when our broker runs, else (None, why not)."""
        pid = self._read_pid()
        if pid is None:
            if self.settings.pid_file.exists():
                return None, f"unreadable pid file {self.settings.pid_file}"
            return None, f"no pid file ({self.settings.pid_file})"
        if not self._is_ours(pid):
            return None, f"stale pid file: pid {pid} is not running our broker"
        return pid, ""

    # -- status

    def status(self, timeout: float = 3.0) -> BrokerStatus:
        """Inspect without changing anything; explains why when not running."""
        s = self.settings
        pid, why = self._running_pid()
        if pid is not None:
            listeners = _read_listeners(s.server_properties)
            port = listeners.get("PLAINTEXT") or s.port
            bootstrap = f"{HOST}:{port}"
            answering = kafka_answers(bootstrap, timeout)
            sasl_port = listeners.get(LISTENER)
            if sasl_port is None:
                return BrokerStatus(True, answering, pid, port, bootstrap, "", s.server_log,
                                    sasl_reason=self._no_listener_reason())
            sasl_bootstrap = f"{HOST}:{sasl_port}"
            login = self._try_login(sasl_bootstrap, timeout) if answering else None
            return BrokerStatus(
                True, answering, pid, port, bootstrap, "", s.server_log,
                sasl_bootstrap=sasl_bootstrap,
                sasl_answering=None if login is None else login.ok,
                sasl_reason="" if login is None else login.reason,
                client_config=s.client_config,
            )
        busy = [p for p in s.ports if not _port_free(p)]
        if busy:
            why += "; " + "; ".join(_describe_port_use(p) for p in busy)
        return BrokerStatus(False, False, None, None, None, why, s.server_log)

    def _no_listener_reason(self) -> str:
        """Why the running broker has no SASL_SSL listener: the reason its start wrote
        into server.properties, else it predates the listener."""
        reason = "this broker was launched without it"
        with contextlib.suppress(OSError):
            text = self.settings.server_properties.read_text()
            match = re.search(rf"^# no {LISTENER} listener: (.*)$", text, re.MULTILINE)
            if match:
                reason = match.group(1)
        if self.settings.sasl_ssl_port is None:
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

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> str:
        """Start (or find running) the broker and wait until it answers, then until its
        SCRAM user logs in over SASL_SSL; returns the PLAINTEXT bootstrap."""
        s = self.settings
        with _locked(s.home / ".kafka.lock"):
            pid, why = self._running_pid()
            if pid is not None:
                return self._already_running(pid, timeout)
            if s.pid_file.exists():
                self._say(f"Removing {why}")
                s.pid_file.unlink(missing_ok=True)
            java = java_executable()
            ports = s.ports
            if len(set(ports)) != len(ports):
                raise LocalKafkaError(
                    f"the broker, controller and {LISTENER} ports must differ, got "
                    f"{s.port}, {s.ctrl_port} and {s.sasl_ssl_port}"
                )
            for port in ports:
                if not _port_free(port):
                    raise LocalKafkaError(
                        f"cannot start on port {port}: {_describe_port_use(port)}"
                    )
            libs = ensure_jars(s, self._say)
            files, why_not = self._prepare_security(s.sasl_bootstrap)
            self._write_config(files, why_not)
            self._format_once(java, libs)
            bootstrap = self._launch(java, libs, timeout)
            if files is not None and s.sasl_bootstrap is not None:
                self._ensure_sasl(files, s.sasl_bootstrap, timeout)
            return bootstrap

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

    def _ensure_sasl(self, files: SecurityFiles, sasl_bootstrap: str, timeout: float) -> bool:
        """Make sure the SCRAM user can log in on the SASL_SSL listener: set its
        credential through the PLAINTEXT listener when it has none (a fresh data dir) or
        another password (a new client file), then log in once. Only warns on failure:
        the PLAINTEXT listener, which everything else uses, is up either way."""
        started = time.monotonic()
        deadline = started + min(timeout, 30.0)
        password = files.password()
        updated = False
        try:
            settings = files.client_settings()
            if password is None:
                raise SecurityError(f"no sasl.password in {files.client_config}")
            updated = ensure_scram_user(self.bootstrap, password)
            login = sasl_login(sasl_bootstrap, settings, max(1.0, deadline - time.monotonic()))
            if login.auth_refused and not updated:
                set_scram_password(self.bootstrap, password)
                updated = True
            while login.auth_refused and updated and time.monotonic() < deadline:
                time.sleep(0.1)  # the new credential reaches the listener a moment later
                login = sasl_login(sasl_bootstrap, settings,
                                   max(1.0, deadline - time.monotonic()))
        except Exception as exc:  # KafkaException, KafkaConfigError, SecurityError
            login = Login(False, reason=str(exc))
        if login.ok:
            what = "credential set, " if updated else ""
            self._say(
                f"{LISTENER} ({SCRAM_MECHANISM}, user {SCRAM_USER}) ready at {sasl_bootstrap} "
                f"({what}{time.monotonic() - started:.1f} s); client settings: "
                f"{files.client_config}"
            )
            return True
        hint = (" (its certificate is not the one in security/: `availability kafka stop` "
                "then `start`)" if login.tls_failed else "")
        self._say(
            f"warning: the {LISTENER} listener at {sasl_bootstrap} does not work: "
            f"{login.reason}{hint}; the PLAINTEXT listener at {self.bootstrap} does"
        )
        return False

    def _already_running(self, pid: int, timeout: float) -> str:
        s = self.settings
        listeners = _read_listeners(s.server_properties)
        port = listeners.get("PLAINTEXT")
        if port is not None and port != s.port:
            raise LocalKafkaError(
                f"the broker from {s.home} already runs on port {port} (pid {pid}), "
                f"not {s.port}; stop it first or use another home"
            )
        sasl_port = listeners.get(LISTENER)
        if sasl_port is not None and s.sasl_ssl_port not in (None, sasl_port):
            raise LocalKafkaError(
                f"the broker from {s.home} already runs with {LISTENER} on port {sasl_port} "
                f"(pid {pid}), not {s.sasl_ssl_port}; stop it first or use another home"
            )
        bootstrap = self.bootstrap
        if kafka_answers(bootstrap, timeout=min(5.0, timeout)):
            self._say(f"Kafka already running (pid {pid}) and answering at {bootstrap}")
        else:
            self._say(f"Kafka already running (pid {pid}) but not answering yet; waiting ...")
            self._wait_ready(pid, time.monotonic(), timeout)
        if sasl_port is None:
            if s.sasl_ssl_port is not None:
                self._say(f"note: no {LISTENER} listener: {self._no_listener_reason()}")
            return bootstrap
        sasl_bootstrap = f"{HOST}:{sasl_port}"
        files, _ = self._prepare_security(sasl_bootstrap, launching=False)
        if files is not None:
            self._ensure_sasl(files, sasl_bootstrap, timeout)
        return bootstrap

    def _write_config(self, files: SecurityFiles | None = None, why_not: str = "") -> None:
        """server.properties (mode 0600: it holds the broker's TLS key when ``files``;
        without them, ``why_not`` is noted there for `status`)."""
        s = self.settings
        for d in (s.conf_dir, s.logs_dir, s.data_path):
            d.mkdir(parents=True, exist_ok=True)
        listeners = f"PLAINTEXT://{HOST}:{s.port},CONTROLLER://{HOST}:{s.ctrl_port}"
        advertised = f"PLAINTEXT://{HOST}:{s.port}"
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        secure = f"# no {LISTENER} listener: {why_not or 'turned off'}\n"
        if files is not None and s.sasl_ssl_port is not None:
            listeners += f",{LISTENER}://{HOST}:{s.sasl_ssl_port}"
            advertised += f",{LISTENER}://{HOST}:{s.sasl_ssl_port}"
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
        s.server_properties.touch(mode=0o600)
        s.server_properties.chmod(0o600)
        s.server_properties.write_text(
            "# Written by `availability kafka start` on every launch; edits are overwritten.\n"
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.bootstrap.servers={HOST}:{s.ctrl_port}\n"
            f"listeners={listeners}\n"
            f"advertised.listeners={advertised}\n"
            "controller.listener.names=CONTROLLER\n"
            f"listener.security.protocol.map={protocols}\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            f"{secure}"
            f"log.dirs={s.data_path}\n"
            f"num.partitions={s.partitions}\n"
            "offsets.topic.replication.factor=1\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\n"
            "group.initial.rebalance.delay.ms=0\n"
        )
        s.log4j_config.write_text(
            "# Without a config log4j2 stays silent; the broker logs here instead.\n"
            "status = warn\n"
            "appender.file.type = RollingFile\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {s.server_log}\n"
            f"appender.file.filePattern = {s.logs_dir}/server.log.%i\n"
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

    def _format_once(self, java: str, libs: Path) -> None:
        """Format storage only when meta.properties is absent: formatting is not idempotent."""
        s = self.settings
        if (s.data_path / "meta.properties").exists():
            return
        cluster_id = _cluster_id()
        self._say(f"Formatting storage in {s.data_path} (cluster id {cluster_id})")
        cmd = [
            java, f"-Dlog4j2.configurationFile={s.log4j_config}", "-cp", f"{libs}/*",
            "kafka.tools.StorageTool", "format", "-t", cluster_id,
            "-c", str(s.server_properties), "--standalone",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LocalKafkaError(
                f"formatting {s.data_path} failed (exit {proc.returncode})",
                details=(proc.stdout + proc.stderr).strip(),
            )

    def _launch(self, java: str, libs: Path, timeout: float) -> str:
        s = self.settings
        cmd = [
            java, f"-Xmx{s.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={s.log4j_config}", f"-Dkafka.logs.dir={s.logs_dir}",
            "-Dlog4j2.shutdownHookEnabled=false",  # keep logging through Kafka's own shutdown
            "-cp", f"{libs}/*", MAIN_CLASS, str(s.server_properties),
        ]  # fmt: skip
        self._log_offsets = {p: _size(p) for p in (s.server_log, s.stdout_log)}
        started = time.monotonic()
        with open(s.stdout_log, "ab") as out:
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
        s.pid_file.write_text(f"{proc.pid}\n")
        self._say(
            f"Started Kafka {KAFKA_VERSION} (pid {proc.pid}) on {self.bootstrap}; "
            f"waiting up to {timeout:.0f} s; log: {s.server_log}"
        )
        return self._wait_ready(proc.pid, started, timeout)

    def _wait_ready(self, pid: int, started: float, timeout: float) -> str:
        s = self.settings
        deadline = started + timeout
        while True:
            if not _alive(pid):
                s.pid_file.unlink(missing_ok=True)
                raise LocalKafkaError(
                    f"Kafka (pid {pid}) exited during startup; see {s.server_log} "
                    f"and {s.stdout_log}",
                    details=self._startup_log_tail(),
                )
            if kafka_answers(self.bootstrap, timeout=1.0):
                self._say(
                    f"Kafka ready at {self.bootstrap} after {time.monotonic() - started:.1f} s"
                )
                return self.bootstrap
            if time.monotonic() >= deadline:
                tail = self._startup_log_tail()
                self._terminate(pid, DEFAULT_STOP_TIMEOUT)
                raise LocalKafkaError(
                    f"Kafka (pid {pid}) did not answer on {self.bootstrap} within "
                    f"{timeout:.0f} s; stopped it. See {s.server_log}",
                    details=tail,
                )
            time.sleep(0.25)

    def _startup_log_tail(self) -> str:
        """Last lines of both logs: a JVM that fails early writes only to kafka.out."""
        s = self.settings
        parts = []
        for path in (s.server_log, s.stdout_log):
            tail = _tail(path, since=self._log_offsets.get(path, 0))
            if tail.strip():
                parts.append(f"--- last lines of {path}\n{tail}")
        return "\n".join(parts)

    # -- stop

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> str:
        """SIGTERM (controlled shutdown), SIGKILL after ``timeout``; returns what happened."""
        s = self.settings
        with _locked(s.home / ".kafka.lock"):
            pid, why = self._running_pid()
            if pid is None:
                if s.pid_file.exists():
                    s.pid_file.unlink(missing_ok=True)
                    return f"Kafka not running: {why}; removed the pid file"
                return f"Kafka not running: {why}"
            self._say(f"Stopping Kafka (pid {pid}) ...")
            started = time.monotonic()
            killed = self._terminate(pid, timeout)
            s.pid_file.unlink(missing_ok=True)
            how = "killed with SIGKILL after SIGTERM timed out" if killed else "stopped"
            return f"Kafka (pid {pid}) {how} in {time.monotonic() - started:.1f} s"

    def _terminate(self, pid: int, timeout: float) -> bool:
        """Returns True when SIGKILL was needed."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._wait_exit(pid, timeout):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_exit(pid, 10.0):
            raise LocalKafkaError(f"Kafka (pid {pid}) survived SIGKILL")
        return True

    @staticmethod
    def _wait_exit(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True
