"""API-only fixtures: in-process replica servers, snapshot publishing, throwaway certs.

A replica server runs the real :class:`ApiServer` (real Kafka consumer, real RocksDB,
real gRPC on 127.0.0.1, free port) on its own event loop thread, so a test can look
at its replica's counters. Kafka fixtures come from ``tests/conftest.py``.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from availability_api.credentials import ServerTls
from availability_api.server import ApiSettings
from availability_contracts.codec import Codec
from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA
from availability_contracts.topics import TopicNames
from availability_kafka.admin import create_topics
from availability_kafka.delivery import ConfirmedProducer
from tests.read_sides import RunningApi

NOW = int(time.time() * 1000)


def replica_settings(brokers: str, topics: TopicNames, data_dir: Path,
                  tls: ServerTls | None = None) -> ApiSettings:
    """Settings of a test replica: localhost, a free port, no drain pause."""
    return ApiSettings(data_dir=data_dir, brokers=brokers, topics=topics, host="127.0.0.1",
                       port=0, tls=tls, drain_seconds=0.0, grace_seconds=2.0)


@pytest.fixture
def api_factory(brokers: str, tmp_path: Path) -> Iterator[Callable[..., RunningApi]]:
    """``make(topics, data_dir=None, tls=None)``: a started replica server."""
    started: list[RunningApi] = []

    def make(topics: TopicNames, data_dir: Path | None = None,
             tls: ServerTls | None = None) -> RunningApi:
        api = RunningApi(replica_settings(brokers, topics,
                                       data_dir or tmp_path / f"replica-{len(started)}", tls))
        started.append(api)
        return api.start()

    yield make
    for api in started:
        api.stop()


def channel_record(channel: str, sku: str, ats: int, version: int,
                   location_id: str | None = None,
                   locations: Sequence[tuple[str, int, int]] = ()) -> dict[str, Any]:
    return dict(channel=channel, sku=sku, location_id=location_id, ats=ats,
                as_of=NOW - 60_000, version=version, computed_at=NOW,
                locations=[dict(location_id=loc, ats=a, in_transit=t)
                           for loc, a, t in locations])


def position_record(sku: str, location_id: str, on_hand: int, version: int,
                    reserved: int = 0, safety_stock: int = 0) -> dict[str, Any]:
    return dict(sku=sku, location_id=location_id, on_hand=on_hand, unsellable=0,
                reserved=reserved, in_transit=0, safety_stock=safety_stock,
                ats=max(0, on_hand - reserved - safety_stock), as_of=NOW - 60_000,
                version=version, computed_at=NOW)


@dataclass
class SnapshotPublisher:
    """Writes snapshot records straight to the snapshot topics, as the engine would."""

    brokers: str
    codec: Codec

    def publish(self, topics: TopicNames, channels: Sequence[Mapping[str, Any]] = (),
                positions: Sequence[Mapping[str, Any]] = ()) -> int:
        # fresh test topics: ask again for their leaders soon, not after the default wait
        producer = ConfirmedProducer(self.brokers,
                                     {"topic.metadata.refresh.fast.interval.ms": 20})
        for record in channels:
            key = "|".join(filter(None, (record["channel"], record["sku"],
                                         record["location_id"])))
            producer.produce(topics.channels,
                             self.codec.encode(CHANNEL_SCHEMA, record, topics.channels), key)
        for record in positions:
            producer.produce(topics.positions,
                             self.codec.encode(POSITION_SCHEMA, record, topics.positions),
                             f"{record['sku']}|{record['location_id']}")
        return producer.confirm()

    def delete(self, topics: TopicNames, channel_keys: Sequence[str] = (),
               position_keys: Sequence[str] = ()) -> int:
        """Tombstones (null values), as the engine writes for keys its rules no longer give."""
        producer = ConfirmedProducer(self.brokers,
                                     {"topic.metadata.refresh.fast.interval.ms": 20})
        for key in channel_keys:
            producer.produce(topics.channels, None, key)
        for key in position_keys:
            producer.produce(topics.positions, None, key)
        return producer.confirm()


def fresh_topics(brokers: str, label: str) -> TopicNames:
    """Topics under unique names, for fixtures wider than one test (``topics`` is not)."""
    prefix = f"t-{label}-{uuid.uuid4().hex[:8]}"
    names = TopicNames(events=f"{prefix}.events", dlq=f"{prefix}.dlq",
                       positions=f"{prefix}.positions", channels=f"{prefix}.channels")
    create_topics(brokers, names)
    return names


@pytest.fixture
def snapshots(brokers: str, codec: Codec) -> SnapshotPublisher:
    return SnapshotPublisher(brokers, codec)


@dataclass(frozen=True)
class Certs:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate it
    signed, and a client certificate from an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


def _leaf(name: str, ca: str, extensions: str, cwd: Path) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
             f"{name}.ext", cwd=cwd)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Throwaway PKI made with the openssl CLI (the `cryptography` package is not a dep)."""
    folder = tmp_path_factory.mktemp("pki")
    _ca("test-ca", folder)
    _ca("rogue-ca", folder)
    _leaf("server", "test-ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
          "extendedKeyUsage=serverAuth\n", folder)
    _leaf("client", "test-ca", "extendedKeyUsage=clientAuth\n", folder)
    _leaf("rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n", folder)
    return Certs(folder / "test-ca.pem", folder / "server.pem", folder / "server.key",
                 folder / "client.pem", folder / "client.key", folder / "rogue.pem",
                 folder / "rogue.key")
