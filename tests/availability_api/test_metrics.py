"""The API replica's Prometheus metrics: requests by method and code, latency, lag."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from availability_api.client import ApiError, AvailabilityClient
from availability_contracts.codec import Codec
from availability_contracts.schemas import CHANNEL_SCHEMA
from availability_contracts.topics import TopicNames
from availability_kafka.delivery import ConfirmedProducer

from .conftest import RunningApi, SnapshotPublisher, channel_record

pytestmark = pytest.mark.kafka


def test_api_metrics_after_traffic(brokers: str, topics: TopicNames, codec: Codec,
                                   tmp_path: Path, wait_for: Callable[..., Any],
                                   free_port: Callable[[], int],
                                   scrape_metrics: Callable[[int], dict[Any, float]]) -> None:
    now = int(time.time() * 1000)
    producer = ConfirmedProducer(brokers)
    record = dict(channel="web", sku="SKU-1", location_id=None, ats=7, as_of=now, version=1,
                  computed_at=now, locations=[dict(location_id="DC1", ats=7, in_transit=0)])
    producer.produce(topics.channels, codec.encode(CHANNEL_SCHEMA, record, topics.channels),
                     "web|SKU-1")
    producer.confirm()
    grpc_port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "availability", "api", "--brokers", brokers,
         "--data-dir", str(tmp_path / "replica"), "--host", "127.0.0.1",
         "--port", str(grpc_port), "--http-port", "0", "--metrics-port", str(metrics_port),
         "--positions-topic", topics.positions, "--channels-topic", topics.channels,
         "--drain-seconds", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with AvailabilityClient(f"127.0.0.1:{grpc_port}", timeout=5) as client:
            wait_for(lambda: _serving(client), 30, "the replica to be SERVING")
            assert client.get("web", "SKU-1").availability.ats == 7
            client.batch_get("web", ["SKU-1", "SKU-2"])
            with pytest.raises(ApiError):
                client.get("web", "A|B")
            with pytest.raises(ApiError):
                client.get("never-seen", "SKU-1")
        samples = scrape_metrics(metrics_port)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    requests = "availability_api_requests_total"
    assert samples[(requests, (("code", "OK"), ("method", "GetAvailability")))] == 1
    assert samples[(requests, (("code", "OK"), ("method", "BatchGetAvailability")))] == 1
    assert samples[(requests, (("code", "INVALID_ARGUMENT"), ("method", "GetAvailability")))] == 1
    assert samples[(requests, (("code", "NOT_FOUND"), ("method", "GetAvailability")))] == 1
    latency = ("availability_api_request_seconds_count", (("method", "GetAvailability"),))
    assert samples[latency] == 3
    assert samples[("availability_api_replica_lag_records", ())] == 0


def _serving(client: AvailabilityClient) -> bool:
    try:
        return client.health() == "SERVING"
    except ApiError:
        return False


def _count(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("availability_api_requests_total",
                                      {"method": method, "code": code})
    return value or 0.0


def test_cancelled_expired_and_undecodable_calls_are_counted_by_their_status(
        topics: TopicNames, snapshots: SnapshotPublisher,
        api_factory: Callable[..., RunningApi], wait_for: Callable[..., Any]) -> None:
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 5, 1)])
    api = api_factory(topics)
    api.wait_serving()
    codes = ("OK", "UNKNOWN", "CANCELLED", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT")
    before = {code: _count("WatchAvailability", code) for code in codes}
    get_invalid = _count("GetAvailability", "INVALID_ARGUMENT")

    with api.client() as client:
        cancelled = client.watch("web", ["SKU-1"])
        assert next(iter(cancelled)).availability.ats == 5
        cancelled.cancel()
        expired = iter(client.watch("web", ["SKU-1"], timeout=0.5))
        assert next(expired).availability.ats == 5
        with pytest.raises(ApiError):
            next(expired)
    with grpc.insecure_channel(api.target) as channel:
        for method in ("GetAvailability", "WatchAvailability"):
            call = channel.unary_stream if method.startswith("Watch") else channel.unary_unary
            with pytest.raises(grpc.RpcError):
                list(call(f"/availability.v1.AvailabilityService/{method}",
                          request_serializer=None, response_deserializer=None)(
                              b"\xff\xff", timeout=5))

    expected = {**before, "CANCELLED": before["CANCELLED"] + 1,
                "DEADLINE_EXCEEDED": before["DEADLINE_EXCEEDED"] + 1,
                "INVALID_ARGUMENT": before["INVALID_ARGUMENT"] + 1}
    wait_for(lambda: {code: _count("WatchAvailability", code) for code in codes} == expected,
             10, "the watches to be counted by their status")
    assert _count("GetAvailability", "INVALID_ARGUMENT") == get_invalid + 1
