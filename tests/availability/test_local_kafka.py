"""The local Kafka launcher against a real broker: its own home and ports, never 9092.

The suite's shared broker runs on 9092, so these tests start a second one in a temporary
home on a free port pair and always stop it, even when an assertion fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from availability.cli import CommandError
from availability.cli import kafka as kafka_cli
from availability.local_kafka import LocalKafka, LocalKafkaError, Settings, kafka_answers
from availability.local_kafka.broker import _cluster_id, _read_listeners
from availability.local_kafka.security import SecurityFiles, sasl_login
from availability_kafka.config import parse_properties

pytestmark = pytest.mark.kafka


def _free_port_pair() -> int:
    """A port whose two successors (the controller and SASL_SSL ports) are free too."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port >= 65533 or port in range(9090, 9095):  # never near the shared broker
            continue
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 1, port + 2):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", p))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port triple")


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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sasl_ssl_listener_serves_the_scram_user(broker: LocalKafka) -> None:
    s = broker.settings
    status = broker.status()
    assert status.ok and status.sasl_answering, status.describe()
    assert status.sasl_bootstrap == f"127.0.0.1:{s.port + 2}" == s.sasl_bootstrap
    assert status.client_config == s.home / "security" / "client-sasl-ssl.properties"
    assert f"SASL_SSL (SCRAM-SHA-512, user availability) at {status.sasl_bootstrap}" in (
        status.describe())
    # PLAINTEXT stays the inter-broker listener and what the plain clients get
    assert _read_listeners(s.server_properties) == {
        "PLAINTEXT": s.port, "CONTROLLER": s.port + 1, "SASL_SSL": s.port + 2}
    assert "inter.broker.listener.name=PLAINTEXT\n" in s.server_properties.read_text()

    files = SecurityFiles(s.security_dir)
    settings = parse_properties(files.client_config)
    assert {k: v for k, v in settings.items() if k != "sasl.password"} == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "availability", "ssl.ca.location": str(files.ca_cert)}
    assert len(settings["sasl.password"]) >= 24
    assert _mode(s.security_dir) == 0o700
    for private in (files.client_config, files.ca_key, files.broker_key, s.server_properties):
        assert _mode(private) == 0o600, private
    assert "BEGIN PRIVATE KEY" in files.broker_key.read_text()

    # metadata over SASL_SSL advertises the SASL_SSL listener; TLS verifies 127.0.0.1
    admin = AdminClient({**settings, "bootstrap.servers": status.sasl_bootstrap})
    assert [b.port for b in admin.list_topics(timeout=10).brokers.values()] == [s.port + 2]
    wrong = sasl_login(status.sasl_bootstrap, {**settings, "sasl.password": "not-it"})
    assert not wrong.ok and wrong.auth_refused and "SCRAM-SHA-512" in wrong.reason
    assert "not-it" not in wrong.reason
    plain = sasl_login(status.sasl_bootstrap, {"security.protocol": "SASL_SSL",
                                               "sasl.mechanism": "SCRAM-SHA-512",
                                               "sasl.username": "availability",
                                               "sasl.password": settings["sasl.password"]},
                       timeout=5)
    assert not plain.ok and plain.tls_failed  # without the CA the certificate is refused


def test_start_and_status_print_the_path_never_the_password(
        broker: LocalKafka, capsys: pytest.CaptureFixture[str]) -> None:
    s = broker.settings
    password = SecurityFiles(s.security_dir).password()
    assert password
    home, port = str(s.home), str(s.port)
    assert _cli("start", "--home", home, "--port", port, "--timeout", "20") == 0
    assert _cli("status", "--home", home, "--port", port) == 0
    out, err = capsys.readouterr()
    assert f"SASL_SSL (SCRAM-SHA-512, user availability) ready at {s.sasl_bootstrap}" in out
    assert out.count(str(s.client_config)) == 2
    assert password not in out + err
    for log in (s.server_log, s.stdout_log):
        assert password not in log.read_text(errors="replace")
    # a --sasl-port other than the running broker's is refused, as for --port
    with pytest.raises(CommandError, match="already runs with SASL_SSL on port"):
        _cli("start", "--home", home, "--port", port, "--sasl-port", str(s.port + 9))


def test_security_is_made_once_and_a_lost_client_file_is_repaired(broker: LocalKafka) -> None:
    s = broker.settings
    files = SecurityFiles(s.security_dir)
    before = {p: p.read_bytes() for p in (files.ca_cert, files.broker_cert, files.client_config)}
    broker.start(timeout=20)
    assert {p: p.read_bytes() for p in before} == before  # same CA, same password
    # A client file lost while the broker runs: a new password, given to the user at start.
    old = files.password()
    files.client_config.unlink()
    said: list[str] = []
    LocalKafka(s, progress=said.append).start(timeout=20)
    new = files.password()
    assert new and new != old
    assert any("credential set" in line for line in said), said
    assert files.ca_cert.read_bytes() == before[files.ca_cert]
    assert broker.status().sasl_answering
    assert not sasl_login(s.sasl_bootstrap or "", {**files.client_settings(),
                                                   "sasl.password": old or ""}).ok


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


def test_a_broker_launched_without_the_listener_says_how_to_get_it(broker: LocalKafka) -> None:
    """The upgrade case: a broker started before the listener existed (here: with it
    turned off) keeps running and serving; start and status say how to add it. Reuses
    the stopped module broker's home (jars, formatted data dir)."""
    home, port = broker.settings.home, broker.settings.port
    plain = LocalKafka(Settings(home=home, port=port, sasl_port=0, heap="256m"))
    try:
        plain.start(timeout=60)
        assert "SASL_SSL:" not in plain.settings.server_properties.read_text()
        assert "no SASL_SSL listener (turned off)" in plain.status().describe()
        said: list[str] = []
        default = LocalKafka(Settings(home=home, port=port), progress=said.append)
        assert default.start(timeout=20) == plain.bootstrap
        assert any("no SASL_SSL listener" in line and "`availability kafka stop` then `start`"
                   in line for line in said), said
        status = default.status()
        assert status.ok and status.sasl_bootstrap is None and status.sasl_answering is None
        assert "no SASL_SSL listener (turned off; `availability kafka stop` then `start` " \
            "adds it)" in status.describe()
        # a broker launched by a version without the listener has no such note
        props = plain.settings.server_properties
        props.write_text("".join(line for line in props.read_text().splitlines(True)
                                 if not line.startswith("# no SASL_SSL")))
        assert "no SASL_SSL listener (this broker was launched without it; " in (
            default.status().describe())
    finally:
        plain.stop(timeout=20)


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--heap"):
        _cli("start", "--home", str(tmp_path), "--heap", "lots")
    with pytest.raises(CommandError, match="must differ"):
        _cli("status", "--home", str(tmp_path), "--port", "19000", "--controller-port", "19000")
    with pytest.raises(CommandError, match="--sasl-port must differ"):
        _cli("status", "--home", str(tmp_path), "--port", "19000", "--sasl-port", "19001")
    with pytest.raises(CommandError, match="--sasl-port must be a TCP port"):
        _cli("status", "--home", str(tmp_path), "--sasl-port", "70000")
    with pytest.raises(CommandError, match=r"--sasl-port \(default --port \+ 2\) must be"):
        _cli("status", "--home", str(tmp_path), "--port", "65534")


def test_listener_ports_and_config() -> None:
    s = Settings(home=Path("/nonexistent"), port=19000)
    assert (s.ctrl_port, s.sasl_ssl_port, s.ports) == (19001, 19002, [19000, 19001, 19002])
    off = Settings(home=Path("/nonexistent"), port=19000, sasl_port=0)
    assert (off.sasl_ssl_port, off.sasl_bootstrap, off.ports) == (None, None, [19000, 19001])
    assert Settings(home=Path("/x"), port=19000, sasl_port=29000).sasl_bootstrap == (
        "127.0.0.1:29000")


def test_env_sets_the_sasl_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVAILABILITY_KAFKA_PORT", "19000")
    monkeypatch.setenv("AVAILABILITY_KAFKA_SASL_PORT", "19100")
    assert Settings.from_env().sasl_ssl_port == 19100
    monkeypatch.setenv("AVAILABILITY_KAFKA_SASL_PORT", "0")
    assert Settings.from_env().sasl_ssl_port is None
    monkeypatch.delenv("AVAILABILITY_KAFKA_SASL_PORT")
    assert Settings.from_env().sasl_ssl_port == 19002


def test_without_openssl_the_broker_starts_without_the_listener_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    said: list[str] = []
    kafka = LocalKafka(Settings(home=tmp_path, port=19000), progress=said.append)
    files, why = kafka._prepare_security(kafka.settings.sasl_bootstrap)
    assert files is None and "`openssl` not found" in why
    assert said == [f"warning: no SASL_SSL listener: {why}"]
    kafka._write_config(files, why)
    props = kafka.settings.server_properties.read_text()
    assert "SASL_SSL:" not in props and f"# no SASL_SSL listener: {why}\n" in props
    assert kafka._no_listener_reason().startswith(why)
