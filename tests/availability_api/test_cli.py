"""`availability api` and `availability query` as a user runs them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from availability_api.client import ApiError, AvailabilityClient
from availability_api.store import LOCK_FILE
from availability_contracts.topics import TopicNames

from .conftest import SnapshotPublisher, channel_record, position_record

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def availability(*args: str) -> list[str]:
    script = REPO / ".venv" / "bin" / "availability"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "availability", *args]


def api_argv(brokers: str, topics: TopicNames, data_dir: Path, *extra: str) -> list[str]:
    return availability("api", "--data-dir", str(data_dir), "--host", "127.0.0.1",
                        "--port", "0", "--http-port", "0", "--metrics-port", "0",
                        "--brokers", brokers,
                        "--positions-topic", topics.positions,
                        "--channels-topic", topics.channels, *extra)


@pytest.fixture
def launch_api() -> Iterator[Callable[[list[str]], tuple[subprocess.Popen[str], str]]]:
    """``launch_api(argv)``: an `availability api` process and its target, once it listens."""
    started: list[subprocess.Popen[str]] = []

    def launch(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        started.append(process)
        assert process.stderr is not None
        for line in process.stderr:
            if match := re.search(r"listening on [^ ]+:(\d+)", line):
                return process, f"127.0.0.1:{match.group(1)}"
        raise AssertionError("the api never said where it listens")

    yield launch
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def api_process(brokers: str, topics: TopicNames, snapshots: SnapshotPublisher,
                tmp_path: Path, launch_api: Callable[[list[str]], Any]
                ) -> tuple[subprocess.Popen[str], str]:
    snapshots.publish(topics, channels=[
        channel_record("web", "SKU-1", 49, 3, locations=[("DC1", 45, 0), ("S001", 6, 0)]),
        channel_record("pickup", "SKU-1", 6, 1, "S001", [("S001", 6, 0)]),
    ], positions=[position_record("SKU-1", "DC1", 50, 2, reserved=5),
                  position_record("SKU-1", "S001", 7, 4, safety_stock=1)])
    return launch_api(api_argv(brokers, topics, tmp_path / "replica",
                               "--drain-seconds", "1.5"))


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


def test_one_api_per_data_dir_and_a_killed_one_does_not_block_a_restart(
        brokers: str, topics: TopicNames, snapshots: SnapshotPublisher, tmp_path: Path,
        launch_api: Callable[[list[str]], tuple[subprocess.Popen[str], str]]) -> None:
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 5, 1)])
    data_dir = tmp_path / "replica"
    argv = api_argv(brokers, topics, data_dir, "--drain-seconds", "0")
    first, _ = launch_api(argv)

    second = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"availability api: error: data dir {data_dir} is in use by another replica "
        f"(pid {first.pid}, lock {LOCK_FILE}); stop it first, or give this replica its "
        "own --data-dir"]

    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert (data_dir / LOCK_FILE).read_text() == f"{first.pid}\n"
    third, target = launch_api(argv)
    with AvailabilityClient(target) as client:
        wait_serving(client)
        assert client.get("web", "SKU-1").availability.ats == 5
    assert (data_dir / LOCK_FILE).read_text() == f"{third.pid}\n"


def _private_mounts_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                           capture_output=True)
    return probe.returncode == 0


needs_private_mounts = pytest.mark.skipif(
    not _private_mounts_work(),
    reason="needs `unshare --user --mount` to mount a read-only or tiny file system")


def with_mounts(mounts: list[str], argv: list[str]) -> list[str]:
    """``argv`` in a private mount namespace where the ``mounts`` commands ran first."""
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-ec",
            " && ".join([*mounts, 'exec "$@"']), "sh", *argv]


@needs_private_mounts
@pytest.mark.parametrize("existing", [False, True], ids=["new-data-dir", "existing-data-dir"])
def test_api_on_a_read_only_file_system_fails_naming_the_data_dir(
        brokers: str, topics: TopicNames, tmp_path: Path, existing: bool) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    data_dir = volume / "replica"
    if existing:
        from availability_api.store import ReplicaStore

        ReplicaStore(data_dir, topics.positions, topics.channels).close()
        (data_dir / LOCK_FILE).unlink()  # a data dir from before the lock file, too
    result = subprocess.run(
        with_mounts([f"mount --bind {volume} {volume}",
                     f"mount -o remount,bind,ro {volume}"],
                    api_argv(brokers, topics, data_dir)),
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    reason = (f"data dir {data_dir} is not writable: cannot open {LOCK_FILE}" if existing
              else f"cannot create data dir {data_dir}")
    assert result.stderr.splitlines() == [
        f"availability api: error: {reason}: Read-only file system"]


@needs_private_mounts
def test_api_on_a_full_disk_stops_with_an_error_naming_the_data_dir(
        brokers: str, topics: TopicNames, snapshots: SnapshotPublisher,
        tmp_path: Path) -> None:
    stores = [(f"S{i:03d}", 1, 0) for i in range(5)]
    snapshots.publish(topics, channels=[channel_record("web", f"SKU-{i}", 5, 1,
                                                       locations=stores)
                                        for i in range(8000)])  # about 1 MB of frames
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(
        with_mounts([f"mount -t tmpfs -o size=512k tmpfs {disk}"],
                    api_argv(brokers, topics, disk / "replica", "--drain-seconds", "0")),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"availability api: error: cannot write to the replica store in {disk}/replica: "
        "IO error: No space left on device")
