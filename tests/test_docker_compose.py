"""Static checks of Dockerfile and docker-compose.yml: no Docker engine needed.

Each service built from this repo must run a command the real CLI accepts, aimed at
addresses the compose Kafka really listens on; the three brokers must form one KRaft
quorum with consistent listeners; the engine members must form one Bytewax cluster (ids
0..N-1, one address list naming them, a volume each); every API replica must have its
own store; Prometheus must scrape every member and replica; the files mounted from the
repo must exist; the image must run the declared console script.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from availability_contracts.topics import ConfigOverride, TopicNames
from tests.cli_commands import parse_in_container, served_metrics_port

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

PROMETHEUS_CONFIG_IN_CONTAINER = "/etc/prometheus/prometheus.yml"

# What the apache/kafka image falls back to for KAFKA_INTER_BROKER_LISTENER_NAME when it
# is not set (its configureDefaults script fills each unset variable separately).
KAFKA_IMAGE_DEFAULT_INTER_BROKER_LISTENER = "PLAINTEXT"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
ALL_INTERFACES = {"", "0.0.0.0", "::", "[::]"}

# A cluster that survives the loss of one broker: 3 replicas, 2 of them in sync.
BROKER_COUNT = 3
MIN_INSYNC = 2


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE.get("services") or {}
BUILT = sorted(name for name, service in SERVICES.items() if "build" in service)
BROKERS = sorted(name for name, service in SERVICES.items()
                 if str(service.get("image", "")).startswith("apache/kafka:"))


def _subcommand(service: dict[str, Any]) -> str | None:
    command = service.get("command")
    return command[0] if "build" in service and isinstance(command, list) and command else None


ENGINES = sorted(name for name, service in SERVICES.items() if _subcommand(service) == "engine")
APIS = sorted(name for name, service in SERVICES.items() if _subcommand(service) == "api")


# --- helpers -------------------------------------------------------------------------


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: int


def parse_listeners(value: str) -> dict[str, Listener]:
    listeners = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        match = re.fullmatch(r"([A-Za-z0-9_]+)://(\[[^\]]*\]|[^:]*):(\d+)", item)
        assert match, f"malformed listener {item!r}"
        name, host, port = match.group(1), match.group(2), int(match.group(3))
        assert name not in listeners, f"listener {name} given twice"
        listeners[name] = Listener(name, host, port)
    return listeners


def kafka_env(broker: str) -> dict[str, str]:
    return environment(SERVICES[broker])


def network_names(name: str) -> set[str]:
    """Names other containers on the compose network resolve to this service."""
    service = SERVICES[name]
    names = {name}
    names.update(filter(None, [service.get("hostname"), service.get("container_name")]))
    networks = service.get("networks")
    if isinstance(networks, dict):
        for network in networks.values():
            names.update((network or {}).get("aliases") or [])
    return names


def broker_addresses(broker: str) -> set[str]:
    """host:port a container can bootstrap from and keep using after the metadata reply:
    an advertised listener named after the broker's service, on the port it binds."""
    env = kafka_env(broker)
    bound = parse_listeners(env["KAFKA_LISTENERS"])
    advertised = parse_listeners(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    return {
        f"{listener.host}:{listener.port}"
        for listener in advertised.values()
        if listener.host in network_names(broker) and bound[listener.name].port == listener.port
    }


def in_network_addresses() -> set[str]:
    return {address for broker in BROKERS for address in broker_addresses(broker)}


def brokers_named(bootstrap: str) -> set[str]:
    """The broker services a bootstrap list reaches (every entry must reach one)."""
    reached = set()
    for address in bootstrap.split(","):
        owners = [broker for broker in BROKERS if address.strip() in broker_addresses(broker)]
        assert owners, f"{address} is not an in-network listener of any broker"
        reached.update(owners)
    return reached


@dataclass(frozen=True)
class PublishedPort:
    host_ip: str
    host_port: int
    container_port: int


def _port_range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def published_ports(service: dict[str, Any]) -> list[PublishedPort]:
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is None:
                continue
            host_ports = _port_range(str(entry["published"]))
            targets = _port_range(str(entry["target"]))
            host_ip = str(entry.get("host_ip") or "")
        else:
            spec = str(entry).split("/", 1)[0]
            parts = spec.rsplit(":", 2)
            if len(parts) == 1:  # container port only: the host port is random
                continue
            host_ip = parts[0] if len(parts) == 3 else ""
            host_ports, targets = _port_range(parts[-2]), _port_range(parts[-1])
        assert len(host_ports) == len(targets), f"port ranges differ in {entry!r}"
        ports += [PublishedPort(host_ip, h, t) for h, t in zip(host_ports, targets, strict=True)]
    return ports


@dataclass(frozen=True)
class Mount:
    kind: str  # "bind" or "volume"
    source: str
    target: str
    read_only: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            source, target = str(entry.get("source", "")), str(entry["target"])
            kind = entry.get("type", "volume")
            read_only = bool(entry.get("read_only", False))
        else:
            parts = str(entry).split(":")
            if len(parts) == 1:  # anonymous volume
                continue
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        result.append(Mount(kind, source, target, read_only))
    return result


def mount_at(service: dict[str, Any], path: str | Path) -> Mount | None:
    """The mount a path in the container lives on (longest target prefix)."""
    path = PurePosixPath(path)
    best = None
    for mount in mounts(service):
        target = PurePosixPath(mount.target)
        if (path == target or target in path.parents) and (
            best is None or len(target.parts) > len(PurePosixPath(best.target).parts)
        ):
            best = mount
    return best


def parse_command(name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The service's command as the CLI inside its container parses it: with the
    container's $AVAILABILITY_* variables and none of this machine's."""
    service = SERVICES[name]
    command = service.get("command")
    assert isinstance(command, list), f"{name}: command must be an exec-form list"
    assert all(isinstance(arg, str) for arg in command), f"{name}: quote every argument"
    return parse_in_container(name, command, environment(service), monkeypatch)


def depends_on(name: str) -> dict[str, str]:
    """The services ``name`` waits for, with the condition."""
    deps = SERVICES[name].get("depends_on") or {}
    if isinstance(deps, list):
        return {dep: "service_started" for dep in deps}
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in deps.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return instructions[starts[-1]:]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def image_volumes() -> set[str]:
    volumes = [exec_form(a) if a.startswith("[") else a.split()
               for k, a in final_stage() if k == "VOLUME"]
    return {path for paths in volumes for path in paths}


# --- compose: the file as Docker Compose reads it ------------------------------------


def test_compose_has_the_services_and_no_obsolete_version_key() -> None:
    assert {"schema-registry", "topics", "prometheus"} <= SERVICES.keys()
    assert len(BROKERS) == BROKER_COUNT, f"brokers: {BROKERS}"
    assert len(ENGINES) >= 2, f"engine members: {ENGINES}"
    assert len(APIS) >= 2, f"API replicas: {APIS}"
    assert "version" not in COMPOSE, "the Compose spec has no `version:`"


def _docker_compose() -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine: `docker compose config` not run")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           timeout=60, check=False)
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()[:1]
        pytest.skip(f"the docker client has no Compose plugin ({' '.join(reason)}): "
                    "`docker compose config` not run")
    return [docker, "compose", "--file", str(COMPOSE_FILE), "--project-directory", str(REPO)]


def test_docker_compose_config_reads_the_same_file() -> None:
    """Docker Compose's own parser (offline): the file is valid Compose and has the
    services these tests read (the YAML merge keys resolve the same way)."""
    compose = _docker_compose()
    result = subprocess.run([*compose, "config", "--format", "json"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    assert set(resolved) == set(SERVICES)
    for name in BUILT:
        assert resolved[name]["command"] == SERVICES[name]["command"], name


# --- compose: the Kafka cluster ------------------------------------------------------


@pytest.mark.parametrize("broker", BROKERS)
def test_kafka_is_the_official_image_in_kraft_combined_mode(broker: str) -> None:
    assert re.fullmatch(r"apache/kafka:4\.\d+(\.\d+)?", SERVICES[broker].get("image", ""))
    env = kafka_env(broker)
    assert {role.strip() for role in env["KAFKA_PROCESS_ROLES"].split(",")} == {
        "broker", "controller"}
    assert env["KAFKA_NODE_ID"].isdigit()
    cluster_id = base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")
    assert len(cluster_id) == 16, "CLUSTER_ID must be a base64url UUID (kafka-storage.sh)"


def test_kafka_brokers_form_one_quorum() -> None:
    """Every broker is a voter, known to all under the same id, address and cluster."""
    envs = {broker: kafka_env(broker) for broker in BROKERS}
    node_ids = {broker: int(env["KAFKA_NODE_ID"]) for broker, env in envs.items()}
    assert len(set(node_ids.values())) == len(BROKERS), f"node ids repeat: {node_ids}"
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1, "one CLUSTER_ID for all"
    voter_lists = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert len(voter_lists) == 1, f"brokers disagree on the voters: {voter_lists}"
    voters: dict[int, tuple[str, int]] = {}
    for voter in voter_lists.pop().split(","):
        voter_id, _, address = voter.strip().partition("@")
        host, _, port = address.rpartition(":")
        assert int(voter_id) not in voters, f"voter {voter_id} listed twice"
        voters[int(voter_id)] = (host, int(port))
    assert set(voters) == set(node_ids.values()), (
        f"voters {sorted(voters)} are not the brokers' node ids {sorted(node_ids.values())}")
    for broker, env in envs.items():
        host, port = voters[node_ids[broker]]
        assert host in network_names(broker), (
            f"voter {node_ids[broker]} is {host}, not the service {broker}")
        bound = parse_listeners(env["KAFKA_LISTENERS"])
        controllers = [n.strip() for n in env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")]
        controller = {bound[name].port: bound[name] for name in controllers}.get(port)
        assert controller, f"{broker}: no controller listener on voter port {port}"
        assert controller.host in ALL_INTERFACES | network_names(broker), (
            f"{broker}: the controller listens on {controller.host!r}: the other voters "
            "cannot reach it")


@pytest.mark.parametrize("broker", BROKERS)
def test_kafka_listeners_are_consistent(broker: str) -> None:
    env = kafka_env(broker)
    bound = parse_listeners(env["KAFKA_LISTENERS"])
    advertised = parse_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(item.strip().split(":", 1) for item in protocol_map.split(","))
    controllers = {n.strip() for n in env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")}
    inter_broker = env.get("KAFKA_INTER_BROKER_LISTENER_NAME",
                           KAFKA_IMAGE_DEFAULT_INTER_BROKER_LISTENER)

    assert bound.keys() <= protocols.keys(), "every listener needs a security protocol"
    assert len({listener.port for listener in bound.values()}) == len(bound), "port reused"
    assert controllers <= bound.keys()
    assert not controllers & advertised.keys(), "controller listeners are not advertised"
    assert inter_broker in bound.keys() - controllers
    assert advertised.keys() <= bound.keys()
    assert inter_broker in advertised
    assert advertised[inter_broker].host in network_names(broker), (
        "the other brokers replicate over the inter-broker listener: it must be advertised "
        "under this broker's service name")

    host_ports = {p.host_port: p for p in published_ports(SERVICES[broker])}
    for listener in advertised.values():
        port = bound[listener.name].port
        if listener.host in network_names(broker):
            assert listener.port == port, f"{listener.name}: advertised port is not bound"
        elif listener.host in LOOPBACK_HOSTS:
            published = host_ports.get(listener.port)
            assert published, f"{listener.name}: {listener.port} is not published on the host"
            assert published.container_port == port, f"{listener.name}: wrong container port"
            assert published.host_ip in LOOPBACK_HOSTS, "plaintext Kafka: loopback only"
        else:
            pytest.fail(f"{listener.name}: advertised host {listener.host!r} is unreachable")
    assert broker_addresses(broker), "no listener for the other containers"


@pytest.mark.parametrize("broker", BROKERS)
def test_kafka_keeps_its_log_on_its_own_volume(broker: str) -> None:
    log_dirs = kafka_env(broker)["KAFKA_LOG_DIRS"].split(",")
    for log_dir in log_dirs:
        mount = mount_at(SERVICES[broker], log_dir)
        assert mount and mount.kind == "volume", (
            f"{broker}: {log_dir} is not on a named volume: its log is lost on recreate")


@pytest.mark.parametrize("broker", BROKERS)
def test_kafka_internal_topics_survive_a_broker_loss(broker: str) -> None:
    """3 replicas, 2 in sync: acknowledged writes are on two brokers, and one broker may
    be down without stopping writes."""
    env = kafka_env(broker)
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
                "KAFKA_DEFAULT_REPLICATION_FACTOR",
                "KAFKA_MIN_INSYNC_REPLICAS"):
        assert key in env, f"{broker}: {key} must be set (the image defaults to 1)"
    for key, value in env.items():
        if key.endswith("REPLICATION_FACTOR"):
            assert int(value) == len(BROKERS), f"{broker}: {key}={value}"
        if key.endswith(("MIN_ISR", "MIN_INSYNC_REPLICAS")):
            assert int(value) == MIN_INSYNC < len(BROKERS), f"{broker}: {key}={value}"


@pytest.mark.parametrize("broker", BROKERS)
def test_kafka_healthcheck_asks_the_broker(broker: str) -> None:
    healthcheck = SERVICES[broker].get("healthcheck")
    assert healthcheck, "topics/engine wait for service_healthy: kafka needs a healthcheck"
    test = healthcheck["test"]
    argv = test[1:] if isinstance(test, list) else test.split()
    assert argv[0] in ("/opt/kafka/bin/kafka-broker-api-versions.sh",
                       "/opt/kafka/bin/kafka-topics.sh")
    server = argv[argv.index("--bootstrap-server") + 1]
    bound_ports = {f"localhost:{listener.port}"
                   for listener in parse_listeners(kafka_env(broker)["KAFKA_LISTENERS"]).values()}
    assert server in broker_addresses(broker) | bound_ports, (
        f"{broker}'s healthcheck asks {server}, not this broker")


def test_kafka_brokers_run_one_version_and_start_together() -> None:
    assert len({SERVICES[broker]["image"] for broker in BROKERS}) == 1, "one Kafka version"
    for broker in BROKERS:
        assert SERVICES[broker].get("restart") in ("always", "unless-stopped"), broker
        assert not depends_on(broker), f"{broker}: the brokers start together"


# --- compose: services built from the repo -------------------------------------------


def test_some_services_are_built_from_the_repo() -> None:
    assert {"topics", *ENGINES, *APIS} <= set(BUILT)


@pytest.mark.parametrize("name", BUILT)
def test_built_from_the_repo_dockerfile(name: str) -> None:
    build = SERVICES[name]["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    assert context == REPO
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == REPO / "Dockerfile"
    assert (REPO / "Dockerfile").is_file()


@pytest.mark.parametrize("name", BUILT)
def test_command_is_accepted_by_the_cli(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse_command(name, monkeypatch)
    assert args.command == SERVICES[name]["command"][0]


@pytest.mark.parametrize("name", BUILT)
def test_brokers_are_the_compose_kafka(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client bootstraps from all three brokers (any one of them may be down) and
    waits until they are healthy."""
    service = SERVICES[name]
    env_brokers = environment(service).get("AVAILABILITY_BROKERS")
    if env_brokers is not None:
        assert brokers_named(env_brokers) == set(BROKERS), f"{name}: $AVAILABILITY_BROKERS"
    args = parse_command(name, monkeypatch)
    if not hasattr(args, "brokers"):
        return
    assert brokers_named(args.brokers) == set(BROKERS), (
        f"{name}: --brokers {args.brokers} does not name every broker")
    waits = depends_on(name)
    for broker in BROKERS:
        assert waits.get(broker) == "service_healthy", f"{name} must wait for {broker}"


def test_depends_on_conditions_can_be_met() -> None:
    for name in SERVICES:
        for dep, condition in depends_on(name).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert SERVICES[dep].get("healthcheck"), f"{dep} has no healthcheck"
            if condition == "service_completed_successfully":
                assert SERVICES[dep].get("restart", "no") == "no", f"{dep} must not restart"
    for name in [*ENGINES, *APIS]:
        assert depends_on(name)["topics"] == "service_completed_successfully", name
    assert depends_on("topics")["schema-registry"] == "service_healthy"


def test_topics_are_replicated_to_survive_a_broker_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `topics create` makes of its options on this cluster: 3 replicas and
    min.insync.replicas=2 on every topic (the settings the CLI itself computes)."""
    from availability_kafka.admin import default_replication_factor

    args = parse_command("topics", monkeypatch)
    replication = args.replication_factor or default_replication_factor(len(BROKERS))
    assert replication == len(BROKERS) == BROKER_COUNT
    names = TopicNames(events=args.events_topic, dlq=args.dlq_topic,
                       positions=args.positions_topic, channels=args.channels_topic)
    configs = names.configs([ConfigOverride.parse(text) for text in args.configs], replication)
    assert set(configs) == set(vars(names).values())
    for topic, config in configs.items():
        assert config.get("min.insync.replicas") == str(MIN_INSYNC), (
            f"{topic}: min.insync.replicas={config.get('min.insync.replicas')}")


def test_host_ports_are_unique() -> None:
    seen: dict[int, str] = {}
    for name, service in SERVICES.items():
        for port in published_ports(service):
            assert port.host_port not in seen, (
                f"host port {port.host_port} published by {seen.get(port.host_port)} and {name}")
            seen[port.host_port] = name


def test_mounted_repo_files_exist() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for mount in mounts(service):
            if mount.kind == "bind":
                assert not mount.source.startswith(("/", "~")), (
                    f"{name}: {mount.source} is outside the repo")
                # A missing bind source makes Docker create an empty directory there.
                assert (COMPOSE_FILE.parent / mount.source).exists(), (
                    f"{name}: {mount.source} does not exist")
            else:
                assert mount.source in declared, f"{name}: volume {mount.source} not declared"


def test_named_volumes_belong_to_one_service() -> None:
    """Kafka logs, recovery snapshots and a replica's RocksDB are single-owner state."""
    owners: dict[str, str] = {}
    for name, service in SERVICES.items():
        for mount in mounts(service):
            if mount.kind == "volume":
                assert mount.source not in owners, (
                    f"volume {mount.source} is mounted by {owners.get(mount.source)} and {name}")
                owners[mount.source] = name
    unused = set(COMPOSE.get("volumes") or {}) - set(owners)
    assert not unused, f"declared but mounted by no service: {sorted(unused)}"


# --- compose: the engine cluster -----------------------------------------------------


def engine_args(monkeypatch: pytest.MonkeyPatch) -> dict[str, argparse.Namespace]:
    return {name: parse_command(name, monkeypatch) for name in ENGINES}


def test_engine_members_form_one_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids 0..N-1, once each; every member has the same address list, entry i naming
    the service whose id is i; the list parses as the engine parses it."""
    from dataflows.cluster import CHECK_PORT_OFFSET, ClusterSpec

    members = engine_args(monkeypatch)
    by_id: dict[int, str] = {}
    for name, args in members.items():
        assert args.process_id is not None and args.addresses, (
            f"{name}: a member needs --process-id and --addresses")
        assert args.processes == 1, f"{name}: --processes starts members on one host"
        assert args.process_id not in by_id, (
            f"{name} and {by_id.get(args.process_id)} both have --process-id {args.process_id}")
        by_id[args.process_id] = name
    assert sorted(by_id) == list(range(len(members))), f"member ids {sorted(by_id)}"

    address_lists = {args.addresses for args in members.values()}
    assert len(address_lists) == 1, f"members disagree on --addresses: {address_lists}"
    spec = ClusterSpec.parse(0, address_lists.pop())
    assert spec.members == len(members), (
        f"--addresses has {spec.members} entries for {len(members)} members")
    for process_id, address in enumerate(spec.addresses):
        host, _, port = address.rpartition(":")
        service = by_id[process_id]
        assert host in network_names(service), (
            f"--addresses entry {process_id} is {address}, not the member {service}")
        internal = {int(port), int(port) + CHECK_PORT_OFFSET}
        published = {p.container_port for p in published_ports(SERVICES[service])}
        assert not internal & published, f"{service}: the cluster ports are not for the host"
        assert served_metrics_port(members[service]) not in internal, (
            f"{service}: metrics and cluster ports collide")


def test_engine_members_agree_on_everything_but_their_id(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The start-up check refuses members with other rules, topics or recovery
    partitions: the commands differ in --process-id only, and the rules file is one."""
    members = engine_args(monkeypatch)
    settings = {name: {k: v for k, v in vars(args).items() if k not in ("process_id", "run")}
                for name, args in members.items()}
    first = ENGINES[0]
    for name in ENGINES[1:]:
        differ = {k for k in settings[name] if settings[name][k] != settings[first].get(k)}
        assert not differ, f"{name} and {first} differ in {sorted(differ)}"
    rules = {mount_at(SERVICES[name], args.rules) for name, args in members.items()}
    assert len({(m.source if m else None) for m in rules}) == 1, "one rules file for all"


def test_engine_recovery_partitions_and_topic_partitions_fit_the_members(
        monkeypatch: pytest.MonkeyPatch) -> None:
    members = engine_args(monkeypatch)
    count = len(members)
    partitions = parse_command("topics", monkeypatch).partitions
    assert partitions % count == 0, f"{partitions} partitions, {count} members"
    for name, args in members.items():
        wanted = args.recovery_partitions or count
        assert wanted >= count, f"{name}: {wanted} recovery partitions for {count} members"


@pytest.mark.parametrize("name", ENGINES)
def test_engine_reads_the_mounted_rules_and_keeps_state_in_its_own_volume(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from availability_domain.rules import load_rules

    engine = SERVICES[name]
    args = parse_command(name, monkeypatch)
    rules = mount_at(engine, args.rules)
    assert rules and rules.kind == "bind" and rules.target == str(args.rules), (
        f"--rules {args.rules} is not a file mounted from the repo")
    assert rules.read_only
    load_rules(COMPOSE_FILE.parent / rules.source)

    state = mount_at(engine, args.recovery_dir)
    assert state and state.kind == "volume", (
        f"--recovery-dir {args.recovery_dir} is not on a named volume: state lost on recreate")
    assert state.target in image_volumes(), (
        "the state volume's mount point is not the image's VOLUME (owned by the app user)")
    # (test_named_volumes_belong_to_one_service: no other service mounts it)


@pytest.mark.parametrize("name", ENGINES)
def test_engine_member_restarts_and_stops_cleanly(name: str) -> None:
    """A member that loses a peer exits non-zero; Compose must start it again."""
    engine = SERVICES[name]
    assert engine.get("restart") in ("always", "unless-stopped", "on-failure"), name
    assert engine.get("init") is True, "tini must forward SIGTERM so the epoch finishes"
    grace = re.fullmatch(r"(\d+)s", str(engine.get("stop_grace_period", "10s")))
    assert grace and int(grace.group(1)) >= 30, f"{name}: stop_grace_period too short"


# --- compose: the gRPC read replicas -------------------------------------------------


@pytest.mark.parametrize("name", APIS)
def test_api_serves_grpc_on_loopback_and_keeps_its_store_in_its_own_volume(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    api = SERVICES[name]
    args = parse_command(name, monkeypatch)
    grpc_ports = [p for p in published_ports(api) if p.container_port == args.port]
    assert grpc_ports, f"{name}: --port {args.port} is not published"
    for port in published_ports(api):
        assert port.host_ip in LOOPBACK_HOSTS, (
            f"{name}: {port.host_port} is published on every interface (plaintext gRPC)")

    store = mount_at(api, args.data_dir)
    assert store and store.kind == "volume", (
        f"--data-dir {args.data_dir} is not on a named volume: the replica re-reads the topics")
    assert store.target in image_volumes(), (
        "the store volume's mount point is not the image's VOLUME (owned by the app user)")
    # (test_named_volumes_belong_to_one_service: no other replica mounts it)

    assert api.get("init") is True, "tini must forward SIGTERM so the replica drains"


@pytest.mark.parametrize("name", APIS)
def test_api_healthcheck_asks_grpc_health_on_the_served_port(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from availability_api.client import AvailabilityClient

    args = parse_command(name, monkeypatch)
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], "exec form, with the image's python"
    code = test[3]
    compile(code, "healthcheck", "exec")
    assert "availability_api.client import AvailabilityClient" in code
    assert callable(AvailabilityClient.health)
    assert f"'127.0.0.1:{args.port}'" in code
    assert "'SERVING'" in code


# --- compose: Prometheus -------------------------------------------------------------


def metrics_endpoints(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """service:port of every /metrics endpoint the compose services serve."""
    endpoints = set()
    for name in ENGINES:
        args = parse_command(name, monkeypatch)
        assert args.metrics_port, f"{name}: metrics are turned off (--metrics-port 0)"
        assert args.metrics_host in ALL_INTERFACES, f"{name}: metrics on loopback only"
        endpoints.add(f"{name}:{served_metrics_port(args)}")
    for name in APIS:
        args = parse_command(name, monkeypatch)
        assert args.metrics_port, f"{name}: metrics are turned off (--metrics-port 0)"
        assert args.metrics_host in ALL_INTERFACES, f"{name}: metrics on loopback only"
        endpoints.add(f"{name}:{args.metrics_port}")
    return endpoints


def prometheus_config() -> dict[str, Any]:
    mount = mount_at(SERVICES["prometheus"], PROMETHEUS_CONFIG_IN_CONTAINER)
    assert mount and mount.kind == "bind" and mount.read_only, (
        f"{PROMETHEUS_CONFIG_IN_CONTAINER} is not a read-only file from the repo")
    assert mount.target == PROMETHEUS_CONFIG_IN_CONTAINER
    return yaml.safe_load((COMPOSE_FILE.parent / mount.source).read_text())


def test_prometheus_is_the_official_image_reading_the_repo_config() -> None:
    prometheus = SERVICES["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus.get("image", ""))
    assert "build" not in prometheus
    flags = dict(arg.split("=", 1) for arg in prometheus.get("command") or [] if "=" in arg)
    assert flags.get("--config.file", PROMETHEUS_CONFIG_IN_CONTAINER) == (
        PROMETHEUS_CONFIG_IN_CONTAINER)
    storage = mount_at(prometheus, flags.get("--storage.tsdb.path", "/prometheus"))
    assert storage and storage.kind == "volume", "Prometheus data is lost on recreate"
    ui = [p for p in published_ports(prometheus) if p.container_port == 9090]
    assert ui and all(p.host_ip in LOOPBACK_HOSTS for p in ui)


def test_prometheus_scrapes_every_metrics_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    config = prometheus_config()
    scraped: dict[str, str] = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert job.get("scheme", "http") == "http"
        for static in job.get("static_configs") or []:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                assert host in SERVICES, f"{job['job_name']}: {host} is not a compose service"
                assert port.isdigit(), target
                assert target not in scraped, f"{target} scraped by two jobs"
                scraped[target] = job["job_name"]
    expected = metrics_endpoints(monkeypatch)
    assert set(scraped) == expected, (
        f"scraped {sorted(scraped)}, served {sorted(expected)}")
    jobs = {name: {scraped[t] for t in scraped if t.startswith(f"{name}:")}
            for name in [*ENGINES, *APIS]}
    assert len({job for name in ENGINES for job in jobs[name]}) == 1, "one job for the engine"
    assert len({job for name in APIS for job in jobs[name]}) == 1, "one job for the replicas"
    for target in scraped:
        host = target.rpartition(":")[0]
        assert host in depends_on("prometheus"), f"prometheus does not depend on {host}"


# --- Dockerfile ----------------------------------------------------------------------


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    entrypoints = [args for keyword, args in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    entrypoint = exec_form(entrypoints[-1])
    assert entrypoint == ["availability"]
    assert entrypoint[0] in PYPROJECT["project"]["scripts"]
    commands = [args for keyword, args in final_stage() if keyword == "CMD"]
    assert commands and exec_form(commands[-1]) == ["--help"]


def test_dockerfile_runs_a_supported_python_as_non_root() -> None:
    supported = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            image = args.split()[0]
            match = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?", image)
            assert match, f"base image {image} is not python:X.Y-slim"
            assert f"{match.group(1)}.0" in supported, f"{image} vs {supported}"
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_copies_every_package() -> None:
    listed = PYPROJECT["tool"]["setuptools"]["packages"]
    packages = {name.split(".")[0] for name in listed} | {
        folder.split("/")[0] for folder in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    assert packages, "no packages found"
    copied: set[str] = set()
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and "--from" not in args:
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            copied.update(source.rstrip("/") for source in sources)
    assert "pyproject.toml" in copied
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"

    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert ".venv" in ignored and ".git" in ignored
    for source in copied:
        hit = [pattern for pattern in ignored if fnmatch.fnmatch(source, pattern)]
        assert not hit, f".dockerignore {hit} excludes {source}, which the Dockerfile copies"


# --- compose: the schema registry ----------------------------------------------------

REGISTRY = "schema-registry"
REGISTRY_IMAGE = re.compile(
    r"ghcr\.io/aiven-open/karapace:\d+\.\d+\.\d+|confluentinc/cp-schema-registry:\d+\.\d+\.\d+")


def registry_env() -> dict[str, str]:
    return environment(SERVICES[REGISTRY])


def is_karapace() -> bool:
    return "karapace" in SERVICES[REGISTRY]["image"]


def registry_port() -> int:
    env = registry_env()
    if is_karapace():
        return int(env.get("KARAPACE_PORT", "8081"))
    listeners = env.get("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081")
    return int(listeners.rsplit(":", 1)[1])


def registry_url_of(name: str, monkeypatch: pytest.MonkeyPatch) -> str | None:
    return getattr(parse_command(name, monkeypatch), "schema_registry", None)


def test_registry_is_a_pinned_image_not_built_here() -> None:
    service = SERVICES[REGISTRY]
    assert REGISTRY_IMAGE.fullmatch(service.get("image", "")), (
        f"{service.get('image')}: pin a release of Karapace or cp-schema-registry")
    assert "build" not in service
    if is_karapace():
        assert service.get("entrypoint") == ["python3", "-m", "karapace"], (
            "the Karapace image has no entrypoint of its own")


def test_registry_keeps_its_schemas_on_the_compose_kafka() -> None:
    env = registry_env()
    for broker in BROKERS:
        assert depends_on(REGISTRY).get(broker) == "service_healthy", (
            f"the registry must wait for {broker}")
    if is_karapace():
        assert env.get("KARAPACE_KARAPACE_REGISTRY") == "true", "the registry API is off"
        bootstrap = env["KARAPACE_BOOTSTRAP_URI"]
        schemas_topic = env.get("KARAPACE_TOPIC_NAME", "_schemas")
        replication = env.get("KARAPACE_REPLICATION_FACTOR")
        listen = env.get("KARAPACE_HOST", "127.0.0.1")
        compatibility = env.get("KARAPACE_COMPATIBILITY", "BACKWARD")
    else:
        bootstrap = env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].removeprefix(
            "PLAINTEXT://")
        schemas_topic = env.get("SCHEMA_REGISTRY_KAFKASTORE_TOPIC", "_schemas")
        replication = env.get("SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR")
        listen = env.get("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081").split("//")[1]
        compatibility = env.get("SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL", "BACKWARD")
    assert brokers_named(bootstrap) == set(BROKERS), f"{bootstrap}: not every broker"
    assert replication == str(len(BROKERS)), (
        f"the schemas topic has {replication} replicas on a cluster of {len(BROKERS)}")
    assert schemas_topic not in set(vars(TopicNames()).values())
    assert listen.split(":")[0] in ("0.0.0.0", "::", "[::]"), (
        "listening on loopback only: the other containers cannot reach the registry")
    # docs/operations.md, section 4: transitive compatibility in production
    assert compatibility.upper() in ("BACKWARD_TRANSITIVE", "FULL_TRANSITIVE")


def test_registry_healthcheck_probes_its_port() -> None:
    healthcheck = SERVICES[REGISTRY].get("healthcheck")
    assert healthcheck, "engine and api wait for service_healthy"
    test = healthcheck["test"]
    assert isinstance(test, list) and test[0] == "CMD"
    urls = [arg for arg in test if arg.startswith("http")]
    assert urls, "the healthcheck asks no URL"
    parts = urlsplit(urls[0])
    assert parts.hostname in LOOPBACK_HOSTS and parts.port == registry_port()
    if is_karapace():
        assert test[1:3] == ["python3", "/opt/karapace/healthcheck.py"]
        assert parts.path == "/_health"


def test_registry_is_published_on_loopback_only() -> None:
    ports = published_ports(SERVICES[REGISTRY])
    assert ports and all(p.host_ip in LOOPBACK_HOSTS for p in ports), (
        "the registry has no authentication here: loopback only")
    assert {p.container_port for p in ports} == {registry_port()}


def test_engine_and_api_use_the_compose_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine reads framed events and writes framed snapshots; the api reads them:
    both must be in registry mode, on the same registry, or every record is refused."""
    from availability.cli.registry_options import registry_settings

    urls = {name: registry_url_of(name, monkeypatch) for name in BUILT}
    for name in [*ENGINES, *APIS]:
        url = urls[name]
        assert url, f"{name} has no --schema-registry"
        settings = registry_settings(parse_command(name, monkeypatch))
        assert settings is not None
        parts = urlsplit(settings.url)
        assert parts.hostname in network_names(REGISTRY), f"{name}: {url} is not the registry"
        assert parts.port == registry_port(), f"{name}: {url} is not the registry's port"
        expected = registry_env().get("KARAPACE_ADVERTISED_PROTOCOL", "http")
        assert parts.scheme == expected
        assert depends_on(name).get(REGISTRY) == "service_healthy", (
            f"{name} must wait for the registry")
    used = {url for url in urls.values() if url}
    assert len(used) == 1, f"services use different registries: {urls}"
