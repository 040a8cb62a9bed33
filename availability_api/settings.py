"""What one API replica needs to know, with the defaults the CLI shows (no gRPC import,
so ``availability --help`` stays quick)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from availability_contracts.registry import RegistrySettings
from availability_contracts.topics import TopicNames
from availability_kafka.config import KafkaConnection

if TYPE_CHECKING:
    from availability_api.credentials import ServerTls


@dataclass(frozen=True)
class ApiSettings:
    data_dir: Path
    brokers: KafkaConnection | str
    topics: TopicNames = field(default_factory=TopicNames)
    host: str = "[::]"
    port: int = 50051
    """gRPC port; 0 picks a free port (see ApiServer.port)."""
    tls: ServerTls | None = None
    """Secures the gRPC and the HTTP/JSON port alike."""
    schema_registry: RegistrySettings | str | None = None
    drain_seconds: float = 2.0
    grace_seconds: float = 5.0
    http_port: int | None = None
    """HTTP/JSON port; None: off, 0: any free one (see ApiServer.http_port). The CLI's
    default is :data:`HTTP_PORT`, and its ``--http-port 0`` turns it off, like
    ``--metrics-port 0``."""
    http_host: str | None = None
    """Address of the HTTP/JSON port; None: the same as ``host``."""
    metrics_port: int = 0
    """Prometheus /metrics port; 0: off (the CLI's default is :data:`METRICS_PORT`)."""
    metrics_host: str = "127.0.0.1"
    """Address of the /metrics port: loopback unless told otherwise."""
    channels_in_memory: bool = True
    """Keep every channel answer in memory as well as in RocksDB, for Get and BatchGet
    (see :mod:`availability_api.store`); off when they do not fit in RAM."""
    sse_keepalive_seconds: float = 15.0
    """An HTTP stream without changes for this long gets a comment line, so proxies keep
    it open and a client that went away is noticed."""

    @property
    def http_address(self) -> str:
        return self.host if self.http_host is None else self.http_host

    @classmethod
    def defaults(cls) -> ApiSettings:
        """What ``availability api`` runs with when given no option."""
        return cls(data_dir=Path("api-data"), brokers="127.0.0.1:9092",
                   http_port=HTTP_PORT, metrics_port=METRICS_PORT)


HTTP_PORT = 8080
"""The CLI's default ``--http-port`` (gRPC is on 50051)."""
METRICS_PORT = 9190
"""The CLI's default ``--metrics-port``: clear of the engine's 9108 + process index."""


def listen_host(host: str) -> str:
    """``host`` as a socket address: without the brackets gRPC takes around IPv6."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host
