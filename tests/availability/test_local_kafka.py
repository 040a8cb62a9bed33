"""The local Kafka launcher against a real broker: its own home and ports, never 9092.

The suite's shared broker runs on 9092, so these tests start a second one in a temporary
home on a free port pair and always stop it, even when an assertion fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from availability.cli import CommandError
from availability.cli import kafka as kafka_cli
from availability.local_kafka import LocalKafka, LocalKafkaError, Settings, kafka_answers
from availability.local_kafka.broker import (
    KAFKA_VERSION,
    _cluster_id,
    _read_listeners,
    ensure_jars,
    layout_problem,
)
from availability.local_kafka.security import SecurityFiles, sasl_login
from availability_contracts.topics import TopicNames
from availability_kafka.admin import TopicCreationError, create_topics
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


# a local cluster (--nodes 3) -----------------------------------------------------------


def test_cluster_layout_keeps_node_0_as_the_single_broker() -> None:
    s = Settings(home=Path("/h"), port=19000)
    single = s.node(0, 1)
    assert (single.port, single.ctrl_port, single.sasl_port, single.node_id) == (
        19000, 19001, 19002, 1)
    assert (single.data_path, single.server_properties, single.pid_file, single.server_log) == (
        s.data_path, s.server_properties, s.pid_file, s.server_log)
    nodes = s.layout(3)
    assert [n.ports for n in nodes] == [[19000, 19001, 19002], [19010, 19011, 19012],
                                        [19020, 19021, 19022]]
    assert [n.node_id for n in nodes] == [1, 2, 3]
    assert [n.data_path for n in nodes] == [Path(f"/h/kafka-cluster-3/node-{i}/data")
                                           for i in range(3)]
    assert nodes[2].pid_file == Path("/h/kafka-cluster-3/node-2/kafka.pid")
    assert nodes[1].server_log == Path("/h/kafka-cluster-3/node-1/logs/server.log")
    given = Settings(home=Path("/h"), port=19000, data_dir=Path("/d"), sasl_port=0)
    assert [n.data_path for n in given.layout(2)] == [Path("/d/node-0"), Path("/d/node-1")]
    assert [n.sasl_port for n in given.layout(2)] == [None, None]
    assert layout_problem(s, 3) is None
    assert "overlap" in (layout_problem(Settings(home=Path("/h"), port=19000,
                                                 controller_port=19010), 3) or "")
    assert "choose a lower --port" in (layout_problem(Settings(home=Path("/h"), port=65520),
                                                      3) or "")


def test_cli_rejects_bad_cluster_options(tmp_path: Path) -> None:
    home = str(tmp_path)
    for nodes in ("0", "10"):
        with pytest.raises(CommandError, match="--nodes must be 1 to 9"):
            _cli("status", "--home", home, "--nodes", nodes)
    with pytest.raises(CommandError, match="the ports of the 3 nodes overlap"):
        _cli("status", "--home", home, "--port", "19000", "--controller-port", "19010",
             "--nodes", "3")
    with pytest.raises(CommandError, match="ports would go up to 65542"):
        _cli("status", "--home", home, "--port", "65520", "--nodes", "3")


def test_a_libs_dir_without_the_jars_is_refused(tmp_path: Path) -> None:
    (tmp_path / "libs").mkdir()
    with pytest.raises(LocalKafkaError, match=r"no kafka_2\.13-.*\.jar in the jars dir"):
        ensure_jars(Settings(home=tmp_path, libs=tmp_path / "libs"))


def test_kafka_help_explains_the_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli("start", "--help")
    out = capsys.readouterr().out
    assert "--nodes N" in out and "--libs-dir DIR" in out
    assert "node 1: 9102, 9103, 9104" in out and "min.insync.replicas 2" in out


@pytest.mark.slow  # ~1 min: three JVMs; CI runs the slow tests too (.ci/run)
def test_three_node_cluster_start_status_stop(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        free_cluster_port: Callable[[int], int]) -> None:
    """`kafka start --nodes 3` in a home of its own (the default home's jars), then
    status, an idempotent start, a lost node brought back, and stop without --nodes."""
    home, port = str(tmp_path), free_cluster_port(3)
    libs = ensure_jars(Settings.from_env())
    bootstrap = ",".join(f"127.0.0.1:{port + 10 * n}" for n in range(3))
    kafka = LocalKafka(Settings(home=tmp_path, port=port))  # nodes: what runs
    try:
        began = time.monotonic()
        assert _cli("start", "--home", home, "--port", str(port), "--nodes", "3",
                    "--heap", "256m", "--timeout", "180", "--libs-dir", str(libs)) == 0
        started_s = time.monotonic() - began
        out = capsys.readouterr().out
        assert f"3-node cluster ready at {bootstrap}" in out, out
        assert "brokers 1, 2, 3 registered" in out
        sasl = ",".join(f"127.0.0.1:{port + 10 * n + 2}" for n in range(3))
        assert f"SASL_SSL (SCRAM-SHA-512, user availability) ready at {sasl}" in out
        assert not (tmp_path / f"kafka-{KAFKA_VERSION}").exists()  # the jars were not copied
        assert kafka.nodes == 3 and kafka.bootstrap == bootstrap

        # every node: its own id, ports, data dir, the 3 voters and the replication
        ids = set()
        for n, node in enumerate(kafka.layout()):
            props = node.server_properties.read_text()
            assert f"node.id={n + 1}\n" in props
            assert (f"controller.quorum.voters=1@127.0.0.1:{port + 1},"
                    f"2@127.0.0.1:{port + 11},3@127.0.0.1:{port + 21}\n") in props
            assert _read_listeners(node.server_properties) == {
                "PLAINTEXT": port + 10 * n, "CONTROLLER": port + 10 * n + 1,
                "SASL_SSL": port + 10 * n + 2}
            for line in ("offsets.topic.replication.factor=3", "min.insync.replicas=2",
                         "transaction.state.log.replication.factor=3",
                         "transaction.state.log.min.isr=2", "default.replication.factor=3"):
                assert f"\n{line}\n" in props, line
            assert f"log.dirs={tmp_path}/kafka-cluster-3/node-{n}/data\n" in props
            meta = (node.data_path / "meta.properties").read_text()
            ids.add(next(line for line in meta.splitlines() if line.startswith("cluster.id=")))
        assert len(ids) == 1  # one cluster
        admin = AdminClient({"bootstrap.servers": bootstrap})
        assert sorted(b.port for b in admin.list_topics(timeout=10).brokers.values()) == [
            port, port + 10, port + 20]

        # SASL_SSL on a node other than 0 serves the same user, and lists every broker
        files = SecurityFiles(tmp_path / "security")
        secure = AdminClient({**files.client_settings(),
                              "bootstrap.servers": f"127.0.0.1:{port + 12}"})
        assert sorted(b.port for b in secure.list_topics(timeout=10).brokers.values()) == [
            port + 2, port + 12, port + 22]

        # topics on 3 brokers: replication factor 3, min.insync.replicas 2; a replication
        # factor under the brokers' min.insync.replicas is refused, creating nothing
        names = TopicNames(events="c.events", dlq="c.dlq", positions="c.positions",
                           channels="c.channels")
        with pytest.raises(TopicCreationError, match=r"min\.insync\.replicas=2, more "
                                                     r"than the replication factor 1"):
            create_topics(bootstrap, names, partitions=2, replication_factor=1)
        assert "c.events" not in admin.list_topics(timeout=10).topics
        outcomes = create_topics(bootstrap, names, partitions=2)
        assert [(o.created, o.replication_factor, o.min_insync) for o in outcomes] == [
            (True, 3, 2)] * 4

        # status without --nodes finds the cluster and reports each node
        assert _cli("status", "--home", home, "--port", str(port)) == 0
        out = capsys.readouterr().out
        assert "3-node cluster: 3 of 3 nodes running, 3 of 3 brokers registered (ids 1, 2, 3)" \
            in out, out
        assert "0 of " in out and "partitions under-replicated" in out
        pids = kafka.node_pids()
        for n in range(3):
            assert (f"node {n} (id {n + 1}): running, pid {pids[n]}, 127.0.0.1:{port + 10 * n}, "
                    f"answering; SASL_SSL (SCRAM-SHA-512, user availability) at "
                    f"127.0.0.1:{port + 10 * n + 2}, answering") in out, out

        # start again (without --nodes): nothing launched; another size is refused
        began = time.monotonic()
        assert _cli("start", "--home", home, "--port", str(port)) == 0
        assert time.monotonic() - began < 15
        assert "3-node cluster already running" in capsys.readouterr().out
        assert kafka.node_pids() == pids
        with pytest.raises(CommandError, match=r"the 3-node cluster of .* runs .*one "
                                               r"local Kafka per home"):
            _cli("start", "--home", home, "--port", str(port), "--nodes", "1")

        # a lost node: status says so (exit 3); start brings just that one back
        os.kill(pids[2], signal.SIGTERM)
        while kafka.node_pids().get(2) is not None:
            time.sleep(0.2)
        assert _cli("status", "--home", home, "--port", str(port)) == kafka_cli.EXIT_NOT_RUNNING
        out = capsys.readouterr().out
        assert "2 of 3 nodes running" in out and "node 2 (id 3): not running" in out, out
        assert _cli("start", "--home", home, "--port", str(port), "--timeout", "180",
                    "--libs-dir", str(libs)) == 0
        out = capsys.readouterr().out
        assert "Started node 2 (id 3)" in out and "Started node 0" not in out, out
        again = kafka.node_pids()
        assert again[0] == pids[0] and again[1] == pids[1] and again[2] != pids[2]
        assert _cli("status", "--home", home, "--port", str(port)) == 0
        capsys.readouterr()

        # stop without --nodes stops every node. Node 2 is frozen first: once nodes 0 and
        # 1 have exited, no controller quorum is left to approve its controlled shutdown
        # (Kafka would wait 5 minutes), so stop kills it after QUORUM_LOST_GRACE. The
        # timeout is generous: a loaded machine makes a controlled shutdown slow.
        os.kill(again[2], signal.SIGSTOP)
        began = time.monotonic()
        assert _cli("stop", "--home", home, "--port", str(port), "--timeout", "120") == 0
        stop_s = time.monotonic() - began
        out = capsys.readouterr().out
        assert "Kafka 3-node cluster stopped" in out, out
        assert all(f"node {n} (id {n + 1}) (pid {again[n]}) stopped" in out
                   for n in range(2)), out
        assert (f"node 2 (id 3) (pid {again[2]}) killed with SIGKILL 15 s after a "
                f"majority of the nodes had stopped (no controller quorum was left") in out, out
        assert stop_s < 90, out
        for pid in again.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert _cli("status", "--home", home, "--port", str(port)) == kafka_cli.EXIT_NOT_RUNNING
        out = capsys.readouterr().out
        assert "Kafka not running" in out and "holds a 3-node cluster, not running" in out, out
        assert _cli("status", "--home", home, "--port", str(port), "--nodes", "3") == (
            kafka_cli.EXIT_NOT_RUNNING)
        assert "Kafka 3-node cluster not running" in capsys.readouterr().out
        assert _cli("stop", "--home", home, "--port", str(port)) == 0  # twice is fine
        print(f"3-node cluster: start {started_s:.1f} s, stop {stop_s:.1f} s")
    finally:
        LocalKafka(Settings(home=tmp_path, port=port, nodes=3)).stop(timeout=20)
