"""`availability api` and `availability query` as a user runs them."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from availability.topics import TopicNames
from availability_api.client import ApiError, AvailabilityClient

from .conftest import SnapshotPublisher, channel_record, position_record

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def availability(*args: str) -> list[str]:
    script = REPO / ".venv" / "bin" / "availability"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "availability", *args]


@pytest.fixture
def api_process(brokers: str, topics: TopicNames, snapshots: SnapshotPublisher,
                tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    snapshots.publish(topics, channels=[
        channel_record("web", "SKU-1", 49, 3, locations=[("DC1", 45, 0), ("S001", 6, 0)]),
        channel_record("pickup", "SKU-1", 6, 1, "S001", [("S001", 6, 0)]),
    ], positions=[position_record("SKU-1", "DC1", 50, 2, reserved=5),
                  position_record("SKU-1", "S001", 7, 4, safety_stock=1)])
    process = subprocess.Popen(
        availability("api", "--data-dir", str(tmp_path / "replica"), "--host", "127.0.0.1",
                     "--port", "0", "--brokers", brokers,
                     "--positions-topic", topics.positions,
                     "--channels-topic", topics.channels, "--drain-seconds", "1.5"),
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stderr is not None
    port = ""
    for line in process.stderr:
        if match := re.search(r"listening on [^ ]+:(\d+)", line):
            port = match.group(1)
            break
    assert port, "the api never said where it listens"
    yield process, f"127.0.0.1:{port}"
    if process.poll() is None:
        process.kill()
        process.wait()


def wait_serving(client: AvailabilityClient, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.health() != "SERVING":
        assert time.monotonic() < deadline, "api not SERVING"
        time.sleep(0.1)


def test_api_serves_query_prints_and_sigterm_drains(
        api_process: tuple[subprocess.Popen[str], str]) -> None:
    process, target = api_process
    client = AvailabilityClient(target)
    wait_serving(client)

    result = subprocess.run(
        availability("query", "--target", target, "--channel", "web", "--sku", "SKU-1",
                     "--sku", "SKU-9", "--positions"),
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "channel web  (replica lag: 0 records)"
    assert lines[1].split()[:5] == ["sku", "location", "ats", "found", "version"]
    assert lines[2].split()[:5] == ["SKU-1", "(pooled)", "49", "yes", "3"]
    assert lines[2].endswith("DC1=45 S001=6")
    assert lines[3].split()[:5] == ["SKU-9", "(pooled)", "-", "no", "-"]
    positions = [line.split() for line in lines if line.startswith(("DC1", "S001"))]
    assert [row[:8] for row in positions] == [
        ["DC1", "50", "0", "5", "0", "0", "45", "2"],
        ["S001", "7", "0", "0", "0", "1", "6", "4"]]
    assert "positions of SKU-9: none" in result.stdout

    refused = subprocess.run(
        availability("query", "--target", target, "--channel", "pickup", "--sku", "SKU-1"),
        capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT" in refused.stderr and "location_id is required" in refused.stderr

    watch = client.watch("web", ["SKU-1"], timeout=30)
    stream = iter(watch)
    assert next(stream).availability.ats == 49

    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # draining: NOT_SERVING for the balancers, yet still answering
    assert client.health() == "NOT_SERVING"
    assert client.get("web", "SKU-1").availability.ats == 49
    # after the drain, open streams end with UNAVAILABLE: clients move to another replica
    with pytest.raises(ApiError) as ended:
        next(stream)
    assert ended.value.code.name == "UNAVAILABLE" and "shutting down" in ended.value.details
    assert process.wait(15) == 0
    assert process.stderr is not None
    log = process.stderr.read()
    assert "SIGTERM: shutting down" in log and "stopped" in log
    with pytest.raises(ApiError) as caught:
        client.get("web", "SKU-1", timeout=1)
    assert caught.value.code.name == "UNAVAILABLE"
    client.close()


def test_query_reports_an_unreachable_api(tmp_path: Path) -> None:
    result = subprocess.run(
        availability("query", "--target", "127.0.0.1:1", "--channel", "web", "--sku", "A",
                     "--timeout", "1"),
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("availability query: error: 127.0.0.1:1: UNAVAILABLE")
