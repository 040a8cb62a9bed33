"""Static checks of Dockerfile and docker-compose.yml: no Docker engine needed.

Each service built from this repo must run a command the real CLI accepts, aimed at an
address the compose Kafka really listens on; Kafka's listeners must be consistent; the
files mounted from the repo must exist; the image must run the declared console script.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from availability.cli import build_parser
from availability_contracts.topics import TopicNames

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# The CLI defaults of `--metrics-port` (engine process i serves ENGINE + i); used when a
# command does not set the flag (and when the CLI does not have it at all).
ENGINE_METRICS_PORT = 9108
API_METRICS_PORT = 9109
PROMETHEUS_CONFIG_IN_CONTAINER = "/etc/prometheus/prometheus.yml"

# What the apache/kafka image falls back to for KAFKA_INTER_BROKER_LISTENER_NAME when it
# is not set (its configureDefaults script fills each unset variable separately).
KAFKA_IMAGE_DEFAULT_INTER_BROKER_LISTENER = "PLAINTEXT"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE.get("services") or {}
BUILT = sorted(name for name, service in SERVICES.items() if "build" in service)


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


def kafka_env() -> dict[str, str]:
    return environment(SERVICES["kafka"])


def kafka_names() -> set[str]:
    """Names other containers on the compose network resolve to the kafka container."""
    service = SERVICES["kafka"]
    names = {"kafka"}
    names.update(filter(None, [service.get("hostname"), service.get("container_name")]))
    networks = service.get("networks")
    if isinstance(networks, dict):
        for network in networks.values():
            names.update((network or {}).get("aliases") or [])
    return names


def in_network_addresses() -> set[str]:
    """host:port a container can bootstrap from and keep using after the metadata reply:
    an advertised listener named after the kafka service, on the port it binds."""
    env = kafka_env()
    bound = parse_listeners(env["KAFKA_LISTENERS"])
    advertised = parse_listeners(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    return {
        f"{listener.host}:{listener.port}"
        for listener in advertised.values()
        if listener.host in kafka_names() and bound[listener.name].port == listener.port
    }


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


def _walk_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _walk_parsers(child)


def parse_command(name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The service's command as the CLI inside its container parses it."""
    service = SERVICES[name]
    command = service.get("command")
    assert isinstance(command, list), f"{name}: command must be an exec-form list"
    assert all(isinstance(arg, str) for arg in command), f"{name}: quote every argument"
    container_brokers = environment(service).get("AVAILABILITY_BROKERS")
    if container_brokers is None:
        monkeypatch.delenv("AVAILABILITY_BROKERS", raising=False)
    else:
        monkeypatch.setenv("AVAILABILITY_BROKERS", container_brokers)
    parser = build_parser()
    options = {opt for p in _walk_parsers(parser) for a in p._actions for opt in a.option_strings}
    for arg in command:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert flag in options, f"{name}: {flag} is not a full option of the CLI"
    try:
        return parser.parse_args(command)
    except SystemExit as exc:
        pytest.fail(f"{name}: `availability {' '.join(command)}` is rejected (exit {exc.code})")


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


# --- compose: services and Kafka -----------------------------------------------------


def test_compose_has_the_services_and_no_obsolete_version_key() -> None:
    assert {"kafka", "topics", "engine", "api", "prometheus"} <= SERVICES.keys()
    assert "version" not in COMPOSE, "the Compose spec has no `version:`"


def test_kafka_is_the_official_image_in_kraft_combined_mode() -> None:
    assert re.fullmatch(r"apache/kafka:4\.\d+(\.\d+)?", SERVICES["kafka"].get("image", ""))
    env = kafka_env()
    assert {role.strip() for role in env["KAFKA_PROCESS_ROLES"].split(",")} == {
        "broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert node_id.isdigit()
    cluster_id = base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")
    assert len(cluster_id) == 16, "CLUSTER_ID must be a base64url UUID (kafka-storage.sh)"

    controllers = [n.strip() for n in env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")]
    bound = parse_listeners(env["KAFKA_LISTENERS"])
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1, "single node: one voter"
    voter_id, _, voter_address = voters[0].partition("@")
    voter_host, _, voter_port = voter_address.rpartition(":")
    assert voter_id == node_id
    assert voter_host in LOOPBACK_HOSTS | kafka_names()
    assert int(voter_port) in {bound[name].port for name in controllers}


def test_kafka_listeners_are_consistent() -> None:
    env = kafka_env()
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

    host_ports = {p.host_port: p for p in published_ports(SERVICES["kafka"])}
    for listener in advertised.values():
        port = bound[listener.name].port
        if listener.host in kafka_names():
            assert listener.port == port, f"{listener.name}: advertised port is not bound"
        elif listener.host in LOOPBACK_HOSTS:
            published = host_ports.get(listener.port)
            assert published, f"{listener.name}: {listener.port} is not published on the host"
            assert published.container_port == port, f"{listener.name}: wrong container port"
        else:
            pytest.fail(f"{listener.name}: advertised host {listener.host!r} is unreachable")
    assert in_network_addresses(), "no listener for the other containers"


def test_kafka_internal_topics_have_one_replica() -> None:
    env = kafka_env()
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert key in env, f"{key} must be set on a single broker"
    for key, value in env.items():
        if key.endswith(("REPLICATION_FACTOR", "MIN_ISR")):
            assert value == "1", f"{key}={value} cannot be met by one broker"


def test_kafka_healthcheck_asks_the_broker() -> None:
    healthcheck = SERVICES["kafka"].get("healthcheck")
    assert healthcheck, "topics/engine wait for service_healthy: kafka needs a healthcheck"
    test = healthcheck["test"]
    argv = test[1:] if isinstance(test, list) else test.split()
    assert argv[0] in ("/opt/kafka/bin/kafka-broker-api-versions.sh",
                       "/opt/kafka/bin/kafka-topics.sh")
    server = argv[argv.index("--bootstrap-server") + 1]
    bound_ports = {f"localhost:{listener.port}"
                   for listener in parse_listeners(kafka_env()["KAFKA_LISTENERS"]).values()}
    assert server in in_network_addresses() | bound_ports


# --- compose: services built from the repo -------------------------------------------


def test_some_services_are_built_from_the_repo() -> None:
    assert {"topics", "engine", "api"} <= set(BUILT)


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
    service = SERVICES[name]
    reachable = in_network_addresses()
    env_brokers = environment(service).get("AVAILABILITY_BROKERS")
    if env_brokers is not None:
        assert set(env_brokers.split(",")) <= reachable, f"{name}: $AVAILABILITY_BROKERS"
    args = parse_command(name, monkeypatch)
    if not hasattr(args, "brokers"):
        return
    assert set(args.brokers.split(",")) <= reachable, (
        f"{name}: --brokers {args.brokers} is not one of {sorted(reachable)}")
    assert "kafka" in (service.get("depends_on") or {}) or any(
        "kafka" in (SERVICES[dep].get("depends_on") or {})
        for dep in service.get("depends_on") or {}
    ), f"{name} must wait for kafka"


def test_depends_on_conditions_can_be_met() -> None:
    for name, service in SERVICES.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dep: {"condition": "service_started"} for dep in depends_on}
        for dep, spec in depends_on.items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert SERVICES[dep].get("healthcheck"), f"{dep} has no healthcheck"
            if condition == "service_completed_successfully":
                assert SERVICES[dep].get("restart", "no") == "no", f"{dep} must not restart"
    engine_deps = SERVICES["engine"]["depends_on"]
    assert engine_deps["topics"]["condition"] == "service_completed_successfully"
    assert SERVICES["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_topic_partitions_are_divisible_by_engine_processes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    partitions = parse_command("topics", monkeypatch).partitions
    processes = parse_command("engine", monkeypatch).processes
    assert partitions % processes == 0, f"{partitions} partitions, {processes} processes"


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


def test_engine_reads_the_mounted_rules_and_keeps_state_in_a_volume(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from availability_domain.rules import load_rules

    engine = SERVICES["engine"]
    args = parse_command("engine", monkeypatch)
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


def image_volumes() -> set[str]:
    volumes = [exec_form(a) if a.startswith("[") else a.split()
               for k, a in final_stage() if k == "VOLUME"]
    return {path for paths in volumes for path in paths}


def test_named_volumes_belong_to_one_service() -> None:
    """Recovery snapshots and a replica's RocksDB are single-owner state."""
    owners: dict[str, str] = {}
    for name, service in SERVICES.items():
        for mount in mounts(service):
            if mount.kind == "volume":
                assert mount.source not in owners, (
                    f"volume {mount.source} is mounted by {owners.get(mount.source)} and {name}")
                owners[mount.source] = name


# --- compose: the gRPC read replica --------------------------------------------------


def test_api_serves_grpc_on_loopback_and_keeps_its_store_in_a_volume(
        monkeypatch: pytest.MonkeyPatch) -> None:
    api = SERVICES["api"]
    args = parse_command("api", monkeypatch)
    grpc_ports = [p for p in published_ports(api) if p.container_port == args.port]
    assert grpc_ports, f"api: --port {args.port} is not published"
    for port in published_ports(api):
        assert port.host_ip in LOOPBACK_HOSTS, (
            f"api: {port.host_port} is published on every interface (plaintext gRPC)")

    store = mount_at(api, args.data_dir)
    assert store and store.kind == "volume", (
        f"--data-dir {args.data_dir} is not on a named volume: the replica re-reads the topics")
    assert store.target in image_volumes(), (
        "the store volume's mount point is not the image's VOLUME (owned by the app user)")

    assert api.get("init") is True, "tini must forward SIGTERM so the replica drains"
    assert api["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_api_healthcheck_asks_grpc_health_on_the_served_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from availability_api.client import AvailabilityClient

    args = parse_command("api", monkeypatch)
    test = SERVICES["api"]["healthcheck"]["test"]
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
    engine = parse_command("engine", monkeypatch)
    engine_port = getattr(engine, "metrics_port", ENGINE_METRICS_PORT)
    api_port = getattr(parse_command("api", monkeypatch), "metrics_port", API_METRICS_PORT)
    assert engine_port and api_port, "metrics are turned off (--metrics-port 0)"
    return {f"engine:{engine_port + i}" for i in range(engine.processes)} | {f"api:{api_port}"}


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
    for target in scraped:
        host = target.rpartition(":")[0]
        assert host in (SERVICES["prometheus"].get("depends_on") or {}), (
            f"prometheus does not depend on {host}")


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


def registry_names() -> set[str]:
    service = SERVICES[REGISTRY]
    names = {REGISTRY}
    names.update(filter(None, [service.get("hostname"), service.get("container_name")]))
    return names


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
    service = SERVICES[REGISTRY]
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
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
    assert set(bootstrap.split(",")) <= in_network_addresses(), bootstrap
    assert replication == "1", "one broker: the schemas topic can have one replica only"
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
    for name in ("engine", "api"):
        url = urls[name]
        assert url, f"{name} has no --schema-registry"
        settings = registry_settings(parse_command(name, monkeypatch))
        assert settings is not None
        parts = urlsplit(settings.url)
        assert parts.hostname in registry_names(), f"{name}: {url} is not the registry"
        assert parts.port == registry_port(), f"{name}: {url} is not the registry's port"
        expected = registry_env().get("KARAPACE_ADVERTISED_PROTOCOL", "http")
        assert parts.scheme == expected
        depends = SERVICES[name]["depends_on"]
        assert depends[REGISTRY]["condition"] == "service_healthy", (
            f"{name} must wait for the registry")
    used = {url for url in urls.values() if url}
    assert len(used) == 1, f"services use different registries: {urls}"
