"""The local Kafka launcher against a real broker: its own home and ports, never 9092.

The suite's shared broker runs on 9092, so these tests start a second one in a temporary
home on a free port pair and always stop it, even when an assertion fails.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from availability.cli import CommandError
from availability.cli import kafka as kafka_cli
from availability.local_kafka import LocalKafka, LocalKafkaError, Settings, kafka_answers
from availability.local_kafka.broker import _cluster_id

pytestmark = pytest.mark.kafka


def _free_port_pair() -> int:
    """A port whose successor (the controller port) is free too."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port >= 65535 or port == 9092:
            continue
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def _cli(*argv: str) -> int:
    """Run `availability kafka ...` in-process through this module's own parser."""
    parser = argparse.ArgumentParser(prog="availability")
    kafka_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["kafka", *argv])
    return args.run(args)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    home = tmp_path_factory.mktemp("kafka-home")
    kafka = LocalKafka(Settings(home=home, port=_free_port_pair(), heap="256m"))
    try:
        kafka.start(timeout=60)
        yield kafka
    finally:
        kafka.stop(timeout=20)


def test_cluster_id_is_kafka_uuid_shaped() -> None:
    ids = {_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") and "=" not in i for i in ids)


def test_status_without_pid_file_says_why(tmp_path: Path) -> None:
    status = LocalKafka(Settings(home=tmp_path, port=_free_port_pair())).status()
    assert not status.running and not status.ok
    assert "no pid file" in status.reason


def test_stale_pid_file_is_detected(tmp_path: Path) -> None:
    kafka = LocalKafka(Settings(home=tmp_path, port=_free_port_pair()))
    kafka.settings.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not our JVM
    assert "stale pid" in kafka.status().reason
    assert "removed the pid file" in kafka.stop()
    assert not kafka.settings.pid_file.exists()


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(LocalKafkaError, match=f"cannot start on port {port}"):
            LocalKafka(Settings(home=tmp_path, port=port)).start(timeout=5)
    assert not (tmp_path / "kafka.pid").exists()


def test_running_broker_answers(broker: LocalKafka) -> None:
    status = broker.status()
    assert status.ok, status.describe()
    assert status.port == broker.settings.port
    assert kafka_answers(broker.bootstrap)
    assert (broker.settings.logs_dir / "server.log").stat().st_size > 0
    assert _cli("status", "--home", str(broker.settings.home), "--port", str(status.port)) == 0


def test_start_again_is_idempotent(broker: LocalKafka) -> None:
    pid = broker.status().pid
    began = time.monotonic()
    assert broker.start(timeout=10) == broker.bootstrap
    assert time.monotonic() - began < 5
    assert broker.status().pid == pid
    # Same home, other port: refused rather than silently ignored.
    other = LocalKafka(Settings(home=broker.settings.home, port=broker.settings.port + 7))
    with pytest.raises(LocalKafkaError, match="already runs on port"):
        other.start(timeout=5)


def test_admin_client_sees_the_broker(broker: LocalKafka) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert [b.port for b in metadata.brokers.values()] == [broker.settings.port]


def test_stop_then_status_says_not_running(broker: LocalKafka) -> None:
    home, port = str(broker.settings.home), str(broker.settings.port)
    pid = broker.status().pid
    assert pid is not None
    assert _cli("stop", "--home", home, "--port", port) == 0
    status = broker.status()
    assert not status.running and "no pid file" in status.reason
    assert not kafka_answers(broker.bootstrap, timeout=1)
    assert _cli("status", "--home", home, "--port", port) == kafka_cli.EXIT_NOT_RUNNING
    assert _cli("stop", "--home", home, "--port", port) == 0  # stopping twice is fine
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--heap"):
        _cli("start", "--home", str(tmp_path), "--heap", "lots")
    with pytest.raises(CommandError, match="must differ"):
        _cli("status", "--home", str(tmp_path), "--port", "19000", "--controller-port", "19000")
