"""Static checks of deploy/kubernetes/: no cluster needed.

Every manifest is parsed and checked for what the API server and the kubelet would
refuse or silently get wrong: selectors that miss their pods, probes and Services aimed
at ports no container declares, mounts of volumes that do not exist, ConfigMap keys
that are not there, a literal Secret. The engine's and the API's command lines are
parsed by the real CLI parser with the environment each pod gets (the engine's member
id from its pod ordinal), and the engine's address list must name the StatefulSet's
pods through its headless Service. `kubectl kustomize` builds the kustomization where
kubectl is installed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.cli_commands import parse_in_container, served_metrics_port

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"
MANIFEST_FILES = sorted(path for path in [*K8S.glob("*.yaml"), *K8S.glob("*.yml")]
                        if path != KUSTOMIZATION)

API_VERSIONS = {
    "ConfigMap": "v1",
    "Service": "v1",
    "StatefulSet": "apps/v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
}
WORKLOAD_KINDS = ("StatefulSet", "Deployment")
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
POD_INDEX_FIELD = f"metadata.labels['{POD_INDEX_LABEL}']"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
ALL_INTERFACES = {"0.0.0.0", "::", "[::]"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
SECRET_WORDS = ("password", "secret", "jaas", "token", "sasl.")


@dataclass(frozen=True)
class Manifest:
    path: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind"))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name"))


def load_manifests() -> list[Manifest]:
    manifests = []
    for path in MANIFEST_FILES:
        for body in yaml.safe_load_all(path.read_text()):
            if body is not None:
                assert isinstance(body, dict), f"{path.name}: a document is not a mapping"
                manifests.append(Manifest(path, body))
    return manifests


MANIFESTS = load_manifests()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [m.body for m in MANIFESTS if m.kind == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [body for body in of_kind(kind) if body["metadata"]["name"] == name]
    assert found, f"no {kind} {name} in deploy/kubernetes"
    return found[0]


WORKLOADS = [m.body for m in MANIFESTS if m.kind in WORKLOAD_KINDS]
WORKLOAD_IDS = [f"{w['kind']}/{w['metadata']['name']}" for w in WORKLOADS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def template_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict((workload["spec"]["template"].get("metadata") or {}).get("labels") or {})


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    """name (or str(number)) -> containerPort, for resolving probe and Service ports."""
    ports: dict[str, int] = {}
    for port in container.get("ports") or []:
        number = int(port["containerPort"])
        ports[str(number)] = number
        if "name" in port:
            assert len(port["name"]) <= 15, f"port name {port['name']} longer than 15"
            ports[port["name"]] = number
    return ports


def resolve_port(container: dict[str, Any], port: int | str) -> int | None:
    return container_ports(container).get(str(port))


def the_workload(kind: str, component: str) -> dict[str, Any]:
    """The engine StatefulSet or the API Deployment (by the command its container runs)."""
    found = [w for w in of_kind(kind) if main_container(w)["args"][0] == component]
    assert len(found) == 1, f"expected one {kind} running `availability {component}`"
    return found[0]


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    spec = pod_spec(workload)
    assert len(spec["containers"]) == 1, "one container per pod"
    return dict(spec["containers"][0])


def engine_set() -> dict[str, Any]:
    return the_workload("StatefulSet", "engine")


def api_deployment() -> dict[str, Any]:
    return the_workload("Deployment", "api")


def pod_labels(workload: dict[str, Any], ordinal: int) -> dict[str, str]:
    """The labels a pod of the workload carries (a StatefulSet adds its pod's ordinal)."""
    labels = template_labels(workload)
    if workload["kind"] == "StatefulSet":
        labels[POD_INDEX_LABEL] = str(ordinal)
        labels["statefulset.kubernetes.io/pod-name"] = f"{workload['metadata']['name']}-{ordinal}"
    return labels


def pod_environment(workload: dict[str, Any], ordinal: int = 0) -> dict[str, str]:
    """The environment the main container of pod ``ordinal`` starts with."""
    container = main_container(workload)
    labels = pod_labels(workload, ordinal)
    pod_name = f"{workload['metadata']['name']}-{ordinal}"
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        assert ref, f"envFrom {source}: only ConfigMaps are read here"
        data = named("ConfigMap", ref["name"]).get("data") or {}
        env.update({source.get("prefix", "") + k: str(v) for k, v in data.items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = str(var["value"])
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
            if label:
                assert label.group(1) in labels, f"{name}: pods have no label {label.group(1)}"
                env[name] = labels[label.group(1)]
            else:
                assert path == "metadata.name", f"{name}: fieldPath {path} not modelled here"
                env[name] = pod_name
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = named("ConfigMap", ref["name"]).get("data") or {}
            assert ref["key"] in data, f"{name}: ConfigMap {ref['name']} has no key {ref['key']}"
            env[name] = str(data[ref["key"]])
        else:
            pytest.fail(f"{name}: valueFrom {sorted(source)} not modelled here")
    return env


def parse_pod_command(workload: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                      ordinal: int = 0) -> argparse.Namespace:
    """The container's `availability` command line as the CLI in pod ``ordinal`` parses
    it: with the pod's $AVAILABILITY_* variables and none of this machine's."""
    container = main_container(workload)
    assert "command" not in container, "keep the image's ENTRYPOINT (the console script)"
    args = container["args"]
    assert all(isinstance(arg, str) for arg in args), "quote every argument"
    assert not any("$(" in arg for arg in args), "no $(VAR) expansion: give env defaults"
    return parse_in_container(workload["metadata"]["name"], args,
                              pod_environment(workload, ordinal), monkeypatch)


@dataclass(frozen=True)
class Mounted:
    """A path in the container and the volume it lives on."""

    mount: dict[str, Any]
    volume: dict[str, Any]
    """The pod volume, or {"claimTemplate": ...} for a StatefulSet's claim."""


def volumes_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes") or []}
    for claim in workload["spec"].get("volumeClaimTemplates") or []:
        name = claim["metadata"]["name"]
        assert name not in volumes, f"{name} is both a volume and a claim template"
        volumes[name] = {"name": name, "claimTemplate": claim}
    return volumes


def mounted_at(workload: dict[str, Any], path: str | Path) -> Mounted:
    """The mount (longest mountPath prefix) a path of the main container lives on."""
    target = PurePosixPath(path)
    best = None
    for mount in main_container(workload).get("volumeMounts") or []:
        base = PurePosixPath(mount["mountPath"])
        if (target == base or base in target.parents) and (
                best is None or len(base.parts) > len(PurePosixPath(best["mountPath"]).parts)):
            best = mount
    assert best is not None, f"{path} is on no volume (the image's file system)"
    volume = volumes_of(workload).get(best["name"])
    assert volume is not None, f"mount {best['name']} names no volume"
    return Mounted(best, volume)


def file_in_volume(workload: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], str]:
    """(the volume, the key) that a file mounted from a ConfigMap or Secret comes from."""
    mounted = mounted_at(workload, path)
    assert "subPath" not in mounted.mount, "subPath mounts never see updates"
    relative = str(PurePosixPath(path).relative_to(mounted.mount["mountPath"]))
    volume = mounted.volume
    source = volume.get("configMap") or volume.get("secret")
    assert source is not None, f"{path} is not on a ConfigMap or Secret volume"
    items = {item["path"]: item["key"] for item in source.get("items") or []}
    return volume, items.get(relative, relative)


# --- every manifest ------------------------------------------------------------------


def test_there_are_manifests_for_every_part() -> None:
    kinds = {m.kind for m in MANIFESTS}
    assert {"StatefulSet", "Deployment", "Service", "ConfigMap"} <= kinds, kinds
    assert engine_set() and api_deployment()


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: f"{m.path.name}:{m.kind}/{m.name}")
def test_manifest_has_kind_version_and_a_name(manifest: Manifest) -> None:
    body = manifest.body
    assert body.get("kind") in API_VERSIONS, f"{manifest.path.name}: kind {body.get('kind')}"
    assert body.get("apiVersion") == API_VERSIONS[manifest.kind], (
        f"{manifest.kind} {manifest.name}: apiVersion {body.get('apiVersion')}")
    metadata = body.get("metadata") or {}
    assert isinstance(metadata.get("name"), str) and DNS_LABEL.fullmatch(metadata["name"]), (
        f"{manifest.kind}: metadata.name {metadata.get('name')!r}")
    assert "namespace" not in metadata, (
        f"{manifest.kind} {manifest.name}: the manifests are applied into any namespace")
    for key, value in (metadata.get("labels") or {}).items():
        assert isinstance(value, str), f"label {key}: {value!r} must be a string"


def test_names_are_unique_per_kind() -> None:
    seen = [(m.kind, m.name) for m in MANIFESTS]
    assert len(seen) == len(set(seen)), f"repeated: {sorted(x for x in seen if seen.count(x) > 1)}"


def test_no_secret_is_written_here() -> None:
    """The Kafka client settings are a Secret the operator creates; the manifests only
    refer to it."""
    assert not of_kind("Secret"), "a Secret with literal values does not belong in the repo"
    for config_map in of_kind("ConfigMap"):
        for key, value in (config_map.get("data") or {}).items():
            for line in str(value).splitlines():
                setting = line.split("=", 1)[0].strip().lower()
                assert not any(word in key.lower() or (word in setting and "=" in line)
                               for word in SECRET_WORDS), (
                    f"ConfigMap {config_map['metadata']['name']} key {key}: looks like a secret")
    referenced = {volume["secret"]["secretName"] for w in WORKLOADS
                  for volume in pod_spec(w).get("volumes") or [] if "secret" in volume}
    assert referenced, "the Kafka client settings (--kafka-config) come from a Secret"


# --- workloads -----------------------------------------------------------------------


@pytest.mark.parametrize("workload", WORKLOADS, ids=WORKLOAD_IDS)
def test_selector_matches_the_pod_template_only(workload: dict[str, Any]) -> None:
    selector = workload["spec"]["selector"]
    assert set(selector) == {"matchLabels"}, "matchLabels only (checked here)"
    match = selector["matchLabels"]
    assert match, "an empty selector selects every pod"
    labels = template_labels(workload)
    assert match.items() <= labels.items(), f"selector {match} misses the pods {labels}"
    for other in WORKLOADS:
        if other is not workload:
            assert not match.items() <= template_labels(other).items(), (
                f"{workload['metadata']['name']}'s selector also takes "
                f"{other['metadata']['name']}'s pods")


@pytest.mark.parametrize("workload", WORKLOADS, ids=WORKLOAD_IDS)
def test_probes_ask_declared_ports(workload: dict[str, Any]) -> None:
    for container in containers(workload):
        for probe_name in PROBES:
            probe = container.get(probe_name)
            if probe is None:
                continue
            handlers = {"httpGet", "grpc", "tcpSocket", "exec"} & probe.keys()
            assert len(handlers) == 1, f"{probe_name}: one handler, not {sorted(handlers)}"
            handler = handlers.pop()
            if handler == "exec":
                continue
            port = probe[handler]["port"]
            if handler == "grpc":
                assert isinstance(port, int), "a grpc probe's port must be a number"
            assert resolve_port(container, port), (
                f"{container['name']} {probe_name}: port {port} is not a container port")
            if handler == "httpGet":
                assert str(probe["httpGet"].get("path", "/")).startswith("/")


@pytest.mark.parametrize("workload", WORKLOADS, ids=WORKLOAD_IDS)
def test_mounts_name_volumes_and_every_volume_is_mounted(workload: dict[str, Any]) -> None:
    volumes = volumes_of(workload)
    used: set[str] = set()
    for container in containers(workload):
        paths = [mount["mountPath"] for mount in container.get("volumeMounts") or []]
        assert len(paths) == len(set(paths)), f"{container['name']}: a path mounted twice"
        for mount in container.get("volumeMounts") or []:
            assert mount["name"] in volumes, f"{container['name']}: no volume {mount['name']}"
            used.add(mount["name"])
    assert set(volumes) == used, f"volumes mounted by no container: {sorted(set(volumes) - used)}"


@pytest.mark.parametrize("workload", WORKLOADS, ids=WORKLOAD_IDS)
def test_config_maps_and_keys_referenced_exist(workload: dict[str, Any]) -> None:
    """A missing ConfigMap or key keeps the pod in ContainerCreating (or the key just
    absent from the volume); none is marked optional, so none is silently skipped."""
    for volume in pod_spec(workload).get("volumes") or []:
        if "configMap" in volume:
            ref = volume["configMap"]
            assert not ref.get("optional"), f"volume {volume['name']}: optional ConfigMap"
            data = named("ConfigMap", ref["name"]).get("data") or {}
            for item in ref.get("items") or []:
                assert item["key"] in data, f"ConfigMap {ref['name']} has no key {item['key']}"
        if "secret" in volume:
            ref = volume["secret"]
            assert not ref.get("optional"), f"volume {volume['name']}: optional Secret"
            assert ref.get("items"), f"volume {volume['name']}: name the Secret's key"
    for container in containers(workload):
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                assert not ref.get("optional")
                data = named("ConfigMap", ref["name"]).get("data") or {}
                assert ref["key"] in data, f"{var['name']}: {ref['name']} has no {ref['key']}"


@pytest.mark.parametrize("workload", WORKLOADS, ids=WORKLOAD_IDS)
def test_pods_run_as_the_image_user_with_resources(workload: dict[str, Any]) -> None:
    uid = re.search(r"^USER\s+(\d+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert uid, "the Dockerfile names its user by number"
    spec = pod_spec(workload)
    security = spec.get("securityContext") or {}
    assert security.get("runAsNonRoot") is True
    assert security.get("runAsUser") == int(uid.group(1))
    assert security.get("fsGroup") == int(uid.group(1)), "volumes writable by the app user"
    assert isinstance(spec.get("terminationGracePeriodSeconds"), int)
    images = {container["image"] for container in containers(workload)}
    assert len(images) == 1
    for container in containers(workload):
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        assert {"cpu", "memory"} <= requests.keys(), f"{container['name']}: requests"
        assert "memory" in (resources.get("limits") or {}), f"{container['name']}: no limit"
        context = container.get("securityContext") or {}
        if context.get("readOnlyRootFilesystem"):
            assert mounted_at(workload, "/tmp/x").mount["mountPath"] == "/tmp", (
                "a read-only root file system needs a writable /tmp")


def test_the_engine_and_the_api_run_one_image() -> None:
    images = {container["image"] for w in WORKLOADS for container in containers(w)}
    assert len(images) == 1, f"images: {images}"


# --- Services ------------------------------------------------------------------------


@pytest.mark.parametrize("service", of_kind("Service"), ids=lambda s: s["metadata"]["name"])
def test_service_selects_one_workload_and_targets_its_ports(service: dict[str, Any]) -> None:
    selector = service["spec"].get("selector") or {}
    assert selector, "a Service without a selector has no endpoints here"
    chosen = [w for w in WORKLOADS if selector.items() <= template_labels(w).items()]
    assert len(chosen) == 1, f"{service['metadata']['name']} selects {len(chosen)} workloads"
    container = main_container(chosen[0])
    names = [port.get("name") for port in service["spec"]["ports"]]
    assert len(names) == len(set(names)) and all(names), "name every port, once"
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert resolve_port(container, target), (
            f"{service['metadata']['name']}: targetPort {target} is not a container port")


def test_pod_disruption_budget_keeps_a_replica() -> None:
    api = api_deployment()
    for budget in of_kind("PodDisruptionBudget"):
        match = budget["spec"]["selector"]["matchLabels"]
        assert match.items() <= template_labels(api).items(), "the budget is for the API"
        assert 0 < int(budget["spec"]["minAvailable"]) < api["spec"]["replicas"], (
            "minAvailable must leave a pod that can be drained")


# --- kustomization -------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load(KUSTOMIZATION.read_text()))


def test_kustomization_lists_every_manifest() -> None:
    config = kustomization()
    assert config.get("apiVersion") == "kustomize.config.k8s.io/v1beta1"
    assert config.get("kind") == "Kustomization"
    resources = config.get("resources") or []
    assert len(resources) == len(set(resources)), "a resource listed twice"
    assert set(resources) == {path.name for path in MANIFEST_FILES}, (
        f"listed {sorted(resources)}, in the folder {[p.name for p in MANIFEST_FILES]}")
    # AVAILABILITY_ADDRESSES names the engine pods by name: a prefix or suffix would
    # rename the pods and the Service but not that list; and no namespace of its own.
    assert not {"namePrefix", "nameSuffix", "namespace"} & config.keys()


def test_kubectl_kustomize_builds_the_same_objects() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` not run (the YAML "
                    "checks above still ran)")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (m.kind, m.name) for m in MANIFESTS)
    for doc in built:
        assert "namespace" not in doc["metadata"], doc["metadata"]["name"]


# --- the engine StatefulSet ----------------------------------------------------------


def headless_service(workload: dict[str, Any]) -> dict[str, Any]:
    return named("Service", workload["spec"]["serviceName"])


def test_engine_members_have_stable_names_under_a_headless_service() -> None:
    engine = engine_set()
    spec = engine["spec"]
    assert spec["replicas"] >= 2, "a cluster of one is `--processes 1`"
    assert spec.get("podManagementPolicy") == "Parallel", (
        "members wait for each other at start-up: start them together")
    # Members with different address lists refuse each other: every change waits until
    # all pods are deleted together (docs/operations.md), never rolls pod by pod.
    assert spec.get("updateStrategy", {}).get("type") == "OnDelete"
    service = headless_service(engine)
    assert service["spec"].get("clusterIP") == "None", "the member names need a headless Service"
    assert service["spec"].get("publishNotReadyAddresses") is True, (
        "members look each other up before they are ready")
    assert service["spec"]["selector"].items() <= template_labels(engine).items()


def test_engine_member_id_comes_from_the_pod_ordinal() -> None:
    env = {var["name"]: var for var in main_container(engine_set()).get("env") or []}
    ref = env["AVAILABILITY_PROCESS_ID"]["valueFrom"]["fieldRef"]
    assert ref["fieldPath"] == POD_INDEX_FIELD


def engine_members(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """The engine command as each pod of the StatefulSet parses it."""
    engine = engine_set()
    return [parse_pod_command(engine, monkeypatch, ordinal)
            for ordinal in range(engine["spec"]["replicas"])]


def test_engine_command_parses_in_every_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    members = engine_members(monkeypatch)
    for ordinal, args in enumerate(members):
        assert args.command == "engine"
        assert args.process_id == ordinal, f"pod {ordinal} runs as member {args.process_id}"
        assert args.processes == 1
    settings = [{k: v for k, v in vars(args).items() if k not in ("process_id", "run")}
                for args in members]
    assert all(s == settings[0] for s in settings), "members differ in more than their id"


def test_engine_addresses_name_every_pod_through_the_headless_service(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflows.cluster import CHECK_PORT_OFFSET, ClusterSpec

    engine = engine_set()
    container = main_container(engine)
    service = headless_service(engine)
    members = engine_members(monkeypatch)
    replicas = engine["spec"]["replicas"]
    for args in members:
        spec = ClusterSpec.parse(args.process_id, args.addresses)
        assert spec.members == replicas, f"{spec.members} addresses for {replicas} replicas"
        for index, address in enumerate(spec.addresses):
            host, _, port = address.rpartition(":")
            pod = f"{engine['metadata']['name']}-{index}"
            assert host.split(".")[:2] == [pod, service["metadata"]["name"]], (
                f"address {index} is {address}: not pod {pod} under the headless Service")
            assert host.count(".") == 1, (
                f"{host}: <pod>.<service> resolves in the pod's own namespace, whichever it is")
            assert resolve_port(container, int(port)), f"{port} is not a container port"
            assert resolve_port(container, int(port) + CHECK_PORT_OFFSET), (
                f"the start-up check's port {int(port) + CHECK_PORT_OFFSET} is not declared")
        assert args.recovery_partitions is None or args.recovery_partitions >= replicas


def test_engine_reads_its_rules_from_the_config_map(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from availability_domain.rules import load_rules

    engine = engine_set()
    args = engine_members(monkeypatch)[0]
    volume, key = file_in_volume(engine, args.rules)
    assert "configMap" in volume, "--rules is not a ConfigMap file"
    rules = named("ConfigMap", volume["configMap"]["name"])["data"][key]
    (tmp_path / "rules.toml").write_text(rules)
    load_rules(tmp_path / "rules.toml")


def test_engine_keeps_recovery_state_on_its_own_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_set()
    args = engine_members(monkeypatch)[0]
    claim = mounted_at(engine, args.recovery_dir).volume.get("claimTemplate")
    assert claim, "--recovery-dir is not on a volumeClaimTemplate: one volume per member"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]


@pytest.mark.parametrize("kind, component", [("StatefulSet", "engine"), ("Deployment", "api")])
def test_kafka_client_settings_come_from_the_secret(
        kind: str, component: str, monkeypatch: pytest.MonkeyPatch) -> None:
    workload = the_workload(kind, component)
    args = parse_pod_command(workload, monkeypatch)
    assert args.kafka_config, f"{component}: no --kafka-config"
    volume, key = file_in_volume(workload, args.kafka_config)
    assert "secret" in volume, f"{component}: --kafka-config is not a Secret's file"
    assert key in {item["key"] for item in volume["secret"]["items"]}
    assert args.brokers and "127.0.0.1" not in args.brokers, (
        f"{component}: --brokers {args.brokers} (from $AVAILABILITY_BROKERS)")


def test_engine_liveness_asks_the_metrics_port_of_every_member(
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_set()
    container = main_container(engine)
    for probe_name in ("startupProbe", "livenessProbe"):
        probe = container[probe_name]
        port = resolve_port(container, probe["httpGet"]["port"])
        assert probe["httpGet"]["path"] == "/metrics"
        for args in engine_members(monkeypatch):
            assert args.metrics_host in ALL_INTERFACES, "the kubelet probes the pod's address"
            assert port == served_metrics_port(args), (
                f"{probe_name} asks port {port}, member {args.process_id} serves /metrics "
                f"on {served_metrics_port(args)}")
    annotations = engine["spec"]["template"]["metadata"].get("annotations") or {}
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == resolve_port(container, "metrics")
    assert engine["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30, (
        "the engine finishes its epoch on SIGTERM")


# --- the API Deployment --------------------------------------------------------------


def test_api_runs_replicas_each_with_its_own_store(monkeypatch: pytest.MonkeyPatch) -> None:
    api = api_deployment()
    assert api["spec"]["replicas"] >= 2
    args = parse_pod_command(api, monkeypatch)
    assert args.command == "api"
    volume = mounted_at(api, args.data_dir).volume
    assert "emptyDir" in volume or "claimTemplate" in volume, (
        "--data-dir must be the pod's own volume (an emptyDir rebuilds from the topics)")
    assert api["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") == 0


def test_api_readiness_is_grpc_health_on_the_api_port(monkeypatch: pytest.MonkeyPatch) -> None:
    api = api_deployment()
    args = parse_pod_command(api, monkeypatch)
    container = main_container(api)
    readiness = container["readinessProbe"]
    assert "grpc" in readiness, "readiness must ask grpc.health.v1 (native grpc probe)"
    assert readiness["grpc"]["port"] == args.port
    assert readiness["grpc"].get("service", "") in ("", "availability.v1.AvailabilityService")
    assert resolve_port(container, args.port) == args.port
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert resolve_port(container, liveness["port"]) == args.http_port
    assert resolve_port(container, "metrics") == args.metrics_port
    assert args.metrics_host in ALL_INTERFACES
    annotations = api["spec"]["template"]["metadata"].get("annotations") or {}
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == args.metrics_port
    grace = pod_spec(api)["terminationGracePeriodSeconds"]
    assert grace > args.drain_seconds + args.grace_seconds, "the drain needs its time"


def test_api_service_serves_grpc_and_http(monkeypatch: pytest.MonkeyPatch) -> None:
    api = api_deployment()
    args = parse_pod_command(api, monkeypatch)
    container = main_container(api)
    services = [s for s in of_kind("Service")
                if s["spec"]["selector"].items() <= template_labels(api).items()]
    assert len(services) == 1
    targets = {resolve_port(container, p.get("targetPort", p["port"]))
               for p in services[0]["spec"]["ports"]}
    assert {args.port, args.http_port} <= targets
