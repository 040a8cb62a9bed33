"""The API replica's Prometheus endpoint: requests by method and code, latency, lag."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from availability.codec import CHANNEL_SCHEMA, Codec
from availability.delivery import ConfirmedProducer
from availability.topics import TopicNames
from availability_api.client import ApiError, AvailabilityClient

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
         "--port", str(grpc_port), "--metrics-port", str(metrics_port),
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
