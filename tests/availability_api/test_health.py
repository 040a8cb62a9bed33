"""grpc.health.v1: NOT_SERVING until the replica caught up at startup, then SERVING."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from availability_api.client import ApiError
from availability_api.service import SERVICE_NAME
from availability_contracts.topics import TopicNames
from availability_kafka.admin import create_topics

from .conftest import RunningApi, SnapshotPublisher, channel_record

pytestmark = pytest.mark.kafka

BACKLOG = 20_000


def record_health(target: str, service: str, until: str, timeout: float = 60
                  ) -> list[str]:
    """Statuses streamed by Health.Watch until ``until`` shows up."""
    seen: list[str] = []
    with grpc.insecure_channel(target) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        for response in stream:
            seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
            if seen[-1] == until:
                stream.cancel()
                break
    return seen


def test_not_serving_until_the_backlog_is_applied(
        topics: TopicNames, snapshots: SnapshotPublisher,
        api_factory: Callable[..., RunningApi]) -> None:
    snapshots.publish(topics, channels=[channel_record("web", f"SKU-{i}", i, 1)
                                        for i in range(BACKLOG)])
    api = api_factory(topics)
    at_serving: dict[str, Any] = {}

    def watch_overall() -> None:
        at_serving["statuses"] = record_health(api.target, "", "SERVING")
        at_serving["read"] = api.replica.records_read

    watcher = threading.Thread(target=watch_overall)
    watcher.start()
    service_statuses = record_health(api.target, SERVICE_NAME, "SERVING")
    watcher.join(60)
    assert service_statuses[0] == "NOT_SERVING" and service_statuses[-1] == "SERVING"
    assert at_serving["statuses"][-1] == "SERVING"
    assert at_serving["read"] == BACKLOG  # SERVING only once everything was applied
    with api.client() as client:
        answer = client.batch_get("web", [f"SKU-{i}" for i in range(0, BACKLOG, 997)])
    assert all(value.found and value.ats == int(value.sku[4:]) for value in answer.results)
    assert answer.replica_lag == 0


def test_not_serving_while_the_topics_do_not_exist(
        brokers: str, tmp_path: Path, snapshots: SnapshotPublisher,
        api_factory: Callable[..., RunningApi]) -> None:
    prefix = f"t-late-{uuid.uuid4().hex[:8]}"
    topics = TopicNames(f"{prefix}.events", f"{prefix}.dlq", f"{prefix}.positions",
                        f"{prefix}.channels")
    api = api_factory(topics)
    time.sleep(1.0)
    with api.client() as client:
        assert client.health() == "NOT_SERVING"
        assert client.health(SERVICE_NAME) == "NOT_SERVING"
    create_topics(brokers, topics)
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 4, 1)])
    assert record_health(api.target, "", "SERVING")[-1] == "SERVING"
    # topics that appear after start-up have no start-up end to wait for: SERVING can come
    # a moment before the first record is applied
    deadline = time.monotonic() + 30
    with api.client() as client:
        while True:
            try:
                if client.get("web", "SKU-1").availability.ats == 4:
                    break
            except ApiError:
                pass
            assert time.monotonic() < deadline, "the record published after start never came"
            time.sleep(0.2)
