"""Every Kafka client of the project over SASL_SSL (SCRAM-SHA-512), for real.

The local broker's SASL_SSL listener (see ``secure_kafka`` in tests/conftest.py) and
the CLI as a user runs it, as subprocesses with ``--brokers <SASL_SSL bootstrap>
--kafka-config <client settings file>``: `topics create`, `produce --file`, `bootstrap`,
the `engine` folding what they published into snapshots (read back over SASL_SSL), and
an `api` replica serving a number it read over SASL_SSL. A wrong password is one clear
line; the real password is never shown anywhere.

One set of topics and one engine serve the whole module (``pipeline``), so it stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from availability_api.client import ApiError, AvailabilityClient
from availability_contracts.codec import Codec
from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA
from availability_contracts.times import iso_ms
from availability_contracts.topics import TopicNames
from availability_kafka.topic_reader import latest_by_key

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
MECHANISM = "SASL_SSL/SCRAM-SHA-512"

RULES = """
[locations.DC1]
type = "dc"
safety_stock = 0

[locations.S001]
type = "store"
tags = ["ship-from-store"]
safety_stock = 1

[channels.web]
locations = ["DC1"]
location_tags = ["ship-from-store"]
buffer = 2
"""

MINUTE = 60_000
NOW = int(time.time() * 1000)


def _event(event_id: str, kind: str, location: str, quantity: int, minutes_ago: int,
           sku: str = "SEC-1") -> dict[str, Any]:
    return {"event_id": event_id, "event_type": kind, "source": "pos-test",
            "occurred_at": iso_ms(NOW - minutes_ago * MINUTE), "sku": sku,
            "location_id": location, "quantity": quantity}


EVENTS = [
    _event("sec-1", "RECEIPT", "DC1", 40, 30),
    _event("sec-2", "SALE", "DC1", 3, 20),
    _event("sec-3", "RECEIPT", "S001", 10, 10),
]
ERP_ROWS = [("SEC-2", "DC1", 25), ("SEC-2", "S001", 4)]  # as_of: an hour ago

# positions: ats = on_hand - safety_stock; web = sum - buffer 2
EXPECTED_POSITIONS = {"SEC-1|DC1": 37, "SEC-1|S001": 9, "SEC-2|DC1": 25, "SEC-2|S001": 3}
EXPECTED_WEB = {"SEC-1": 44, "SEC-2": 26}


def availability(*args: str) -> list[str]:
    script = REPO / ".venv" / "bin" / "availability"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "availability", *args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclass
class Pipeline:
    """What the module shares: the SASL_SSL target, its topics, input files, every
    command's output and the log files of the long-running processes."""

    secure: Any  # conftest.SecureKafka
    topics: TopicNames
    workdir: Path
    outputs: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    @property
    def events_file(self) -> Path:
        return self.workdir / "events.jsonl"

    @property
    def erp_file(self) -> Path:
        return self.workdir / "erp.csv"

    @property
    def rules(self) -> Path:
        return self.workdir / "rules.toml"

    def topic_args(self) -> list[str]:
        t = self.topics
        return ["--events-topic", t.events, "--dlq-topic", t.dlq,
                "--positions-topic", t.positions, "--channels-topic", t.channels]

    def run(self, *argv: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`availability ARGV --brokers <SASL_SSL> --kafka-config <config>`, to completion."""
        kafka = ["--brokers", self.secure.bootstrap,
                 "--kafka-config", str(config or self.secure.config)]
        result = subprocess.run(availability(*argv, *kafka), capture_output=True, text=True,
                                timeout=90, env=_env())
        self.outputs += [result.stdout, result.stderr]
        return result

    def popen(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"
        self.logs.append(log)
        with log.open("ab") as out:
            return subprocess.Popen(availability(*argv, *self.secure.cli_args()), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=_env())

    def engine_argv(self, recovery: Path) -> list[str]:
        return ["engine", "--rules", str(self.rules), "--recovery-dir", str(recovery),
                "--processes", "1", "--epoch-interval", "1", "--metrics-port", "0",
                *self.topic_args()]

    def api_argv(self, data_dir: Path, port: int) -> list[str]:
        return ["api", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port",
                str(port), "--http-port", "0", "--metrics-port", "0", "--drain-seconds", "0",
                *self.topic_args()]

    def positions(self) -> dict[str, int]:
        codec = Codec()
        table = latest_by_key(self.secure.connection(), self.topics.positions,
                              lambda b: codec.decode(POSITION_SCHEMA, b), timeout=30)
        return {key: record["ats"] for key, record in table.items()}

    def web(self) -> dict[str, int]:
        codec = Codec()
        table = latest_by_key(self.secure.connection(), self.topics.channels,
                              lambda b: codec.decode(CHANNEL_SCHEMA, b), timeout=30)
        return {record["sku"]: record["ats"] for record in table.values()
                if record["channel"] == "web"}


def _env() -> dict[str, str]:
    """The environment minus a client settings file of the caller's: only ours counts."""
    return {k: v for k, v in os.environ.items() if k != "AVAILABILITY_KAFKA_CONFIG"}


def _stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def pipeline(secure_kafka: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Pipeline]:
    """Topics made with `topics create`, events published with `produce` and
    `bootstrap`, and an `engine` that folded them, all over SASL_SSL."""
    prefix = f"t-secure-{uuid.uuid4().hex[:8]}"
    topics = TopicNames(f"{prefix}.events", f"{prefix}.dlq", f"{prefix}.positions",
                        f"{prefix}.channels")
    p = Pipeline(secure_kafka, topics, tmp_path_factory.mktemp("secure"))
    p.rules.write_text(RULES)
    p.events_file.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    as_of = iso_ms(NOW - 60 * MINUTE)
    p.erp_file.write_text("sku,location_id,on_hand,as_of,description\n" + "".join(
        f"{sku},{loc},{qty},{as_of},test item\n" for sku, loc, qty in ERP_ROWS))

    p.results["topics"] = p.run("topics", "create", "--partitions", "2", *p.topic_args())
    p.results["produce"] = p.run("produce", "--file", str(p.events_file),
                                 "--topic", topics.events)
    p.results["bootstrap"] = p.run("bootstrap", "--erp-snapshot", str(p.erp_file),
                                   "--events-topic", topics.events)
    for name, result in p.results.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
    engine = p.popen("engine", *p.engine_argv(p.workdir / "recovery"))
    try:
        try:
            _wait_for(lambda: p.positions() == EXPECTED_POSITIONS and p.web() == EXPECTED_WEB,
                      60, "the engine's snapshots over SASL_SSL")
        except AssertionError:
            print(_log(p.logs[0]))
            raise
        yield p
    finally:
        _stop(engine)


def test_topics_create_over_sasl_ssl(pipeline: Pipeline) -> None:
    created = pipeline.results["topics"]
    states = {line.split()[0]: line.split()[1] for line in created.stdout.splitlines()
              if line.startswith("t-secure-")}
    t = pipeline.topics
    assert states == dict.fromkeys([t.events, t.dlq, t.positions, t.channels], "created"), (
        created.stdout)
    again = pipeline.run("topics", "create", "--partitions", "2", *pipeline.topic_args())
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout and again.stdout.count("exists") == 4


def test_produce_and_bootstrap_publish_over_sasl_ssl(pipeline: Pipeline) -> None:
    assert f"published {len(EVENTS)} event(s) to {pipeline.topics.events}" in (
        pipeline.results["produce"].stdout)
    assert f"published {len(ERP_ROWS)} COUNT event(s) to {pipeline.topics.events}" in (
        pipeline.results["bootstrap"].stdout)


def test_engine_folds_them_and_publishes_snapshots_over_sasl_ssl(pipeline: Pipeline) -> None:
    # The pipeline waited for exactly these numbers; read them once more, as a consumer.
    assert pipeline.positions() == EXPECTED_POSITIONS
    assert pipeline.web() == EXPECTED_WEB


def test_api_replica_serves_what_it_read_over_sasl_ssl(pipeline: Pipeline) -> None:
    port = _free_port()
    api = pipeline.popen("api", *pipeline.api_argv(pipeline.workdir / "replica", port))
    client = AvailabilityClient(f"127.0.0.1:{port}")

    def serving() -> bool:
        if api.poll() is not None:
            raise AssertionError(f"the api exited ({api.returncode}): "
                                 f"{_log(pipeline.logs[-1])}")
        try:
            return client.health() == "SERVING"
        except ApiError:
            return False  # not listening yet

    try:
        _wait_for(serving, 45, "the api replica to catch up over SASL_SSL")
        value = client.get("web", "SEC-1").availability
        assert (value.found, value.ats) == (True, EXPECTED_WEB["SEC-1"])
        assert {c.location_id: c.ats for c in value.locations} == {"DC1": 37, "S001": 9}
        answer = client.batch_get("web", ["SEC-1", "SEC-2", "SEC-404"]).results
        assert [(v.sku, v.found, v.ats) for v in answer] == [
            ("SEC-1", True, 44), ("SEC-2", True, 26), ("SEC-404", False, 0)]
    finally:
        client.close()
        assert _stop(api) == 0, _log(pipeline.logs[-1])


def _wrong_password_commands(p: Pipeline, tmp: Path) -> dict[str, list[str]]:
    return {
        "topics": ["topics", "create", *p.topic_args()],
        "produce": ["produce", "--file", str(p.events_file), "--topic", p.topics.events],
        "bootstrap": ["bootstrap", "--erp-snapshot", str(p.erp_file),
                      "--events-topic", p.topics.events],
        "engine": p.engine_argv(tmp / "recovery"),
        "api": p.api_argv(tmp / "replica", _free_port()),
    }


@pytest.mark.parametrize("command", ["topics", "produce", "bootstrap", "engine", "api"])
def test_a_wrong_password_is_one_clear_line(pipeline: Pipeline, tmp_path: Path,
                                            command: str) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    config = tmp_path / "wrong.properties"
    config.write_text("".join(
        f"sasl.password={wrong}\n" if line.startswith("sasl.password=") else line + "\n"
        for line in pipeline.secure.config.read_text().splitlines()))
    config.chmod(0o600)
    began = time.monotonic()
    result = pipeline.run(*_wrong_password_commands(pipeline, tmp_path)[command],
                          config=config)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert pipeline.secure.bootstrap in line and MECHANISM in line, line
    assert "authentication" in line.lower(), line
    assert "Traceback" not in result.stderr + result.stdout
    assert wrong not in result.stderr + result.stdout
    assert time.monotonic() - began < 10, "a refused login should not wait for a timeout"


def test_the_password_is_never_shown(pipeline: Pipeline, secure_kafka: Any) -> None:
    """Runs last: every command's output so far, the engine's and the api's logs, and the
    broker's own logs."""
    password = secure_kafka.password()
    assert len(password) >= 16
    status = subprocess.run(availability("kafka", "status"), capture_output=True, text=True,
                            timeout=60, env=_env())
    assert status.returncode == 0 and secure_kafka.bootstrap in status.stdout, status.stdout
    assert str(secure_kafka.config) in status.stdout
    shown = [status.stdout, status.stderr, *pipeline.outputs]
    assert len(shown) >= 8
    assert not [text for text in shown if password in text]
    logs = [*pipeline.logs, *secure_kafka.logs]
    assert pipeline.logs and all(log.exists() for log in pipeline.logs)
    assert [str(log) for log in logs if password in _log(log)] == []
