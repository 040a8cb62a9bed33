"""What one engine run needs to know, in one picklable value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from availability_contracts.registry import RegistrySettings
from availability_contracts.topics import TopicNames
from availability_domain.events import DEFAULT_MAX_FUTURE_SKEW_MS
from availability_domain.inventory import DEFAULT_DEDUPE_HORIZON_MS, DEFAULT_LATENESS_HORIZON_MS
from availability_kafka.config import KafkaConnection

DEFAULT_BATCH_SIZE = 8000
"""Most messages one poll of a partition returns (``--batch-size``).

It only matters when there is a backlog (a steady rate below capacity gives small
batches): then a bigger batch folds more of a SKU's events per call and publishes each
changed key once per batch, so the engine writes fewer records and spends less per
event. Drains of 300k benchmark events on 2 processes: 2,000 -> 8,000 took the engine
from ~8.1k to ~9.8k events/s and 1.8 -> 1.5 records per event; 20,000 gained nothing
more and delayed the first output further.
"""


@dataclass(frozen=True)
class EngineSettings:
    brokers: KafkaConnection | str
    """Where Kafka is and how to connect (``--brokers``, ``--kafka-config``)."""
    rules_path: Path
    recovery_dir: Path | None
    topics: TopicNames = field(default_factory=TopicNames)
    schema_registry: RegistrySettings | str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    """Most messages per partition poll (see :data:`DEFAULT_BATCH_SIZE`)."""
    epoch_interval_s: float = 10.0
    dedupe_horizon_ms: int = DEFAULT_DEDUPE_HORIZON_MS
    lateness_horizon_ms: int = DEFAULT_LATENESS_HORIZON_MS
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
    """An event dated further ahead of the engine clock than this is dead-lettered."""
    flow_id: str = "availability"
    metrics_port: int = 9108
    """Prometheus endpoint; with ``--processes`` process i serves metrics_port + i (a
    member started with ``--addresses`` serves metrics_port itself); 0: off."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint binds to (0.0.0.0 for a scraper on another host)."""
    recovery_partitions: int | None = None
    """Partitions of a new recovery store; None: :data:`RECOVERY_PARTITIONS_PER_MEMBER`
    per member. Fixed once created, so at least the largest member count the cluster
    may grow to."""

    @classmethod
    def defaults(cls) -> EngineSettings:
        """The settings with nothing given: the source of every default the CLI shows."""
        return cls(brokers="127.0.0.1:9092", rules_path=Path("rules.toml"), recovery_dir=None)


RECOVERY_PARTITIONS_PER_MEMBER = 8
"""A new recovery store's default partitions per member. Bytewax 0.21 reads a
partition back at a restart by rescanning its whole table for every 1,000 keys, so the
read grows with the square of the keys per partition: 1M positions of 50k SKUs took
7.2-7.9 s to the first output from one partition, 4.1-4.6 s from 8 or 16. More
partitions also leave room to grow the cluster to 8x the members it started with."""


def default_recovery_partitions(members: int) -> int:
    return RECOVERY_PARTITIONS_PER_MEMBER * members
