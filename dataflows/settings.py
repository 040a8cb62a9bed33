"""What one engine run needs to know, in one picklable value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from availability.topics import TopicNames

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class EngineSettings:
    brokers: str
    rules_path: Path
    recovery_dir: Path | None
    topics: TopicNames = field(default_factory=TopicNames)
    schema_registry: str | None = None
    batch_size: int = 2000
    epoch_interval_s: float = 10.0
    dedupe_horizon_ms: int = 7 * DAY_MS
    lateness_horizon_ms: int = DAY_MS
    max_future_skew_ms: int = HOUR_MS
    """An event dated further ahead of the engine clock than this is dead-lettered."""
    flow_id: str = "availability"
    metrics_port: int = 9108
    """Prometheus endpoint of process 0; process i serves on metrics_port + i; 0: off."""
