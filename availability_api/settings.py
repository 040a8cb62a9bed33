"""What one API replica needs to know, with the defaults the CLI shows (no gRPC import,
so ``availability --help`` stays quick)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from availability_contracts.topics import TopicNames

if TYPE_CHECKING:
    from availability_api.credentials import ServerTls


@dataclass(frozen=True)
class ApiSettings:
    data_dir: Path
    brokers: str
    topics: TopicNames = field(default_factory=TopicNames)
    host: str = "[::]"
    port: int = 50051
    """0 picks a free port (see ApiServer.port)."""
    tls: ServerTls | None = None
    schema_registry: str | None = None
    drain_seconds: float = 2.0
    grace_seconds: float = 5.0
    metrics_port: int = 0
    """Prometheus /metrics port; 0: off (the CLI's default is 9109)."""

    @classmethod
    def defaults(cls) -> ApiSettings:
        return cls(data_dir=Path("api-data"), brokers="127.0.0.1:9092")
