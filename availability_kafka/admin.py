"""The engine's topics on the cluster: creating them idempotently with the configs of
:mod:`availability_contracts.topics`, and describing what is there.

Existing topics are never altered: :func:`create_topics` reports how they differ from
what it would have created, and the operator decides (docs/operations.md, "Topics").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

from availability_contracts.errors import AvailabilityError
from availability_contracts.topics import ConfigOverride, TopicNames
from availability_kafka.config import KafkaConnection
from availability_kafka.topic_reader import scan_topic, watermarks

DEFAULT_REPLICATION = 3
"""The replication factor chosen when none is given and the cluster has enough brokers."""


class TopicCreationError(AvailabilityError):
    """The cluster refused a topic as asked (a bad config, too few brokers, ...); nothing
    was created. The message names each topic and the broker's reason."""

    code = "topic_creation"


class MissingTopics(AvailabilityError):
    """Topics the engine needs are not on the cluster."""

    code = "missing_topics"

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"missing topic{'s' if len(names) > 1 else ''}: {', '.join(names)} "
                         "(run `availability topics create`)")
        self.names = names


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    created: bool
    partitions: int
    replication_factor: int = 0
    differences: tuple[str, ...] = ()
    """For a topic that existed: how it differs from what would have been created."""
    min_insync: int | None = None
    """The topic's min.insync.replicas (its own, else the brokers' default); None when
    the cluster does not say."""


def default_replication_factor(brokers: int) -> int:
    """3 on a cluster of 3 or more brokers, else one replica per broker."""
    return max(1, min(DEFAULT_REPLICATION, brokers))


def create_topics(
    brokers: KafkaConnection | str,
    names: TopicNames,
    partitions: int = 4,
    replication_factor: int | None = None,
    timeout: float = 30.0,
    overrides: Iterable[ConfigOverride] = (),
) -> list[TopicOutcome]:
    """Create the topics that are missing, with ``partitions`` each and the configs of
    ``names.configs(overrides, replication_factor)``; existing ones are left as they are
    and their differences reported. ``replication_factor`` None means
    :func:`default_replication_factor` of the cluster's broker count.

    Every missing topic is first validated by the cluster (``validate_only``), so a bad
    config or replication factor creates nothing and raises :class:`TopicCreationError`.
    """
    admin = AdminClient(KafkaConnection.of(brokers).client())
    cluster = admin.list_topics(timeout=timeout)
    replicas = (replication_factor if replication_factor is not None
                else default_replication_factor(len(cluster.brokers)))
    configs = names.configs(overrides, replicas)
    existing = {name for name in configs if name in cluster.topics}
    inherited = _cluster_min_insync(admin, cluster, timeout)
    _check_min_insync({name: config for name, config in configs.items()
                       if name not in existing}, replicas, inherited)
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=replicas, config=config)
        for name, config in configs.items()
        if name not in existing
    ]
    created: set[str] = set()
    if missing:
        _validate(admin, missing, timeout)
        for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result(timeout)
                created.add(name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
    metadata = _wait_until_listed(admin, list(configs), timeout)
    actual = _topic_configs(admin, [n for n in configs if n not in created], timeout)
    outcomes = []
    for name, config in configs.items():
        shape = metadata[name].partitions
        count, factor = len(shape), _replication(shape)
        differences: list[str] = []
        if name in created:
            min_insync = (int(config["min.insync.replicas"]) if "min.insync.replicas" in config
                          else inherited)
        else:
            entry = actual[name].get("min.insync.replicas")
            min_insync = int(entry.value) if entry is not None and entry.value else None
            if count != partitions:
                differences.append(f"partitions is {count}, would be {partitions}")
            if factor != replicas:
                differences.append(f"replication factor is {factor}, would be {replicas}")
            for key, value in config.items():
                have = actual[name].get(key)
                if have is None or not _same(have.value, value):
                    shown = "not set" if have is None else f"is {have.value}"
                    differences.append(f"{key} {shown}, would be {value}")
        outcomes.append(TopicOutcome(name, name in created, count, factor, tuple(differences),
                                     min_insync))
    return outcomes


def _cluster_min_insync(admin: AdminClient, cluster: Any, timeout: float) -> int | None:
    """The brokers' default ``min.insync.replicas``, which a topic without its own takes
    (a 3-broker cluster usually says 2); None when it cannot be read (not allowed)."""
    broker = next(iter(sorted(cluster.brokers)), None)
    if broker is None:
        return None
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker))
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout)
        entry = entries.get("min.insync.replicas")
        return int(entry.value) if entry is not None and entry.value else None
    except (KafkaException, ValueError, TypeError):
        return None


def _check_min_insync(configs: Mapping[str, Mapping[str, str]], replicas: int,
                      inherited: int | None) -> None:
    """Refuse topics that would take a cluster default min.insync.replicas above their
    replication factor: Kafka creates them, but every acks=all write to them fails."""
    if inherited is None or inherited <= replicas:
        return
    names = [name for name, config in configs.items() if "min.insync.replicas" not in config]
    if names:
        raise TopicCreationError(
            f"nothing created: {', '.join(names)} would take the cluster's default "
            f"min.insync.replicas={inherited}, more than the replication factor {replicas}, "
            "so every write with acks=all (the engine's) would fail; choose "
            f"--replication-factor {inherited} or more, or --config "
            f"min.insync.replicas={replicas}")


def _validate(admin: AdminClient, topics: list[NewTopic], timeout: float) -> None:
    refused: dict[str, list[str]] = {}  # reason -> topics, each reason said once
    for name, future in admin.create_topics(topics, operation_timeout=timeout,
                                            validate_only=True).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if error.name() != "TOPIC_ALREADY_EXISTS":
                refused.setdefault(error.str().rstrip("."), []).append(name)
    if refused:
        raise TopicCreationError("refused by the cluster, nothing created: " + "; ".join(
            f"{', '.join(names)}: {reason}" for reason, names in refused.items()))


def _same(have: str | None, want: str) -> bool:
    if have == want:
        return True
    try:
        return have is not None and float(have) == float(want)
    except ValueError:
        return False


def _replication(partitions: Mapping[int, Any]) -> int:
    return max((len(p.replicas) for p in partitions.values()), default=0)


def _topic_configs(admin: AdminClient, names: list[str], timeout: float
                   ) -> dict[str, dict[str, Any]]:
    """Topic -> config name -> ConfigEntry (every entry, defaults included)."""
    if not names:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    return {resource.name: dict(future.result(timeout))
            for resource, future in admin.describe_configs(resources,
                                                           request_timeout=timeout).items()}


def _wait_until_listed(admin: AdminClient, names: list[str], timeout: float
                       ) -> dict[str, Any]:
    """Metadata of ``names`` once every one of them is visible with its partitions."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        if all(name in topics and topics[name].partitions for name in names):
            return topics
        if time.monotonic() > deadline:
            missing = [name for name in names if name not in topics]
            raise KafkaException(f"topics not visible after {timeout}s: {missing}")
        time.sleep(0.1)


@dataclass(frozen=True)
class PartitionState:
    partition: int
    leader: int
    replicas: int
    in_sync: int
    start: int
    end: int
    records: int | None = None
    """Records read by a scan (compaction leaves gaps: fewer than ``end - start``)."""
    keys: int | None = None
    """Distinct keys read by a scan."""
    live_keys: int | None = None
    """Distinct keys whose latest record is not a tombstone."""

    @property
    def offsets(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class TopicState:
    name: str
    role: str
    replication_factor: int
    partitions: list[PartitionState]
    configs: dict[str, str]
    """Settings made on the topic itself."""
    inherited: dict[str, str] = field(default_factory=dict)
    """Non-default settings the topic takes from the broker or cluster configuration."""

    @property
    def compacted(self) -> bool:
        return "compact" in self.configs.get("cleanup.policy", "")


def describe_topics(brokers: KafkaConnection | str, names: TopicNames,
                    count_keys: bool = False, timeout: float = 30.0,
                    scan_timeout: float = 300.0) -> list[TopicState]:
    """The four topics as they are on the cluster: partitions with leader, replicas,
    in-sync replicas and start/end offsets, and the non-default configs. With
    ``count_keys``, the compacted topics are read to the end to count records and keys.
    Raises :class:`MissingTopics` naming every topic that does not exist."""
    connection = KafkaConnection.of(brokers)
    admin = AdminClient(connection.client())
    topics = admin.list_topics(timeout=timeout).topics
    by_role = names.by_role()
    missing = [name for name in by_role.values()
               if name not in topics or topics[name].error is not None]
    if missing:
        raise MissingTopics(missing)
    entries = _topic_configs(admin, list(by_role.values()), timeout)
    consumer = Consumer(connection.client() | {
        "group.id": f"availability-describe-{uuid.uuid4()}", "enable.auto.commit": False})
    try:
        states = []
        for role, name in by_role.items():
            configs: dict[str, str] = {}
            inherited: dict[str, str] = {}
            for key, entry in sorted(entries[name].items()):
                if entry.is_default or entry.is_sensitive or entry.value is None:
                    continue
                if _source(entry) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value:
                    configs[key] = entry.value
                else:
                    inherited[key] = entry.value
            partitions = []
            for number, meta in sorted(topics[name].partitions.items()):
                low, high = watermarks(consumer, name, number, timeout)
                partitions.append(PartitionState(number, meta.leader, len(meta.replicas),
                                                 len(meta.isrs), low, high))
            state = TopicState(name, role, _replication(topics[name].partitions),
                               partitions, configs, inherited)
            if count_keys and state.compacted:
                state = _with_counts(connection, state, scan_timeout)
            states.append(state)
        return states
    finally:
        consumer.close()


def _source(entry: Any) -> int:
    """A ConfigEntry's source as a number (the client gives an int or a ConfigSource)."""
    return int(getattr(entry.source, "value", entry.source))


def _with_counts(connection: KafkaConnection, state: TopicState, timeout: float
                 ) -> TopicState:
    """``state`` with records, distinct keys and live keys per partition, from a scan."""
    records = {p.partition: 0 for p in state.partitions}
    live: dict[int, dict[bytes | None, bool]] = {p.partition: {} for p in state.partitions}
    for message in scan_topic(connection, state.name, timeout):
        partition = message.partition()
        records[partition] = records.get(partition, 0) + 1
        live.setdefault(partition, {})[message.key()] = message.value() is not None
    partitions = [
        PartitionState(p.partition, p.leader, p.replicas, p.in_sync, p.start, p.end,
                       records[p.partition], len(live[p.partition]),
                       sum(live[p.partition].values()))
        for p in state.partitions
    ]
    return TopicState(state.name, state.role, state.replication_factor, partitions,
                      state.configs, state.inherited)
