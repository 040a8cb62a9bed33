"""The replica store: one writer per data dir, released on close and on any death."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from availability_api.server import ApiServer
from availability_api.store import LOCK_FILE, DataDirInUse, ReplicaStore, StoreError
from availability_contracts.topics import TopicNames

from .conftest import SnapshotPublisher, channel_record, replica_settings

HOLD_STORE = """
import sys
from pathlib import Path
from availability_api.store import ReplicaStore
store = ReplicaStore(Path(sys.argv[1]), "p", "c")
print("open", flush=True)
sys.stdin.read()
"""


def test_a_second_store_on_a_data_dir_in_use_is_refused_naming_the_holder(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "replica"
    first = ReplicaStore(data_dir, "p", "c")
    assert (data_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(DataDirInUse) as refused:
        ReplicaStore(data_dir, "p", "c")
    assert str(refused.value) == (
        f"data dir {data_dir} is in use by another replica (pid {os.getpid()}, this "
        f"process, lock {LOCK_FILE}); stop it first, or give this replica its own "
        "--data-dir")
    first.close()
    ReplicaStore(data_dir, "p", "c").close()  # closing released it


def test_the_lock_of_a_killed_process_does_not_block_the_next_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "replica"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_STORE, str(data_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(DataDirInUse, match=rf"in use by another replica \(pid {holder.pid},"):
            ReplicaStore(data_dir, "p", "c")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (data_dir / LOCK_FILE).read_text() == f"{holder.pid}\n"  # stale, yet harmless
    store = ReplicaStore(data_dir, "p", "c")
    assert (data_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    store.close()


def test_a_data_dir_that_cannot_be_created_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match=rf"cannot create data dir {tmp_path}/file/replica: "):
        ReplicaStore(tmp_path / "file" / "replica", "p", "c")


@pytest.mark.kafka
def test_a_second_server_on_a_data_dir_in_use_refuses_to_start(
        topics: TopicNames, snapshots: SnapshotPublisher, api_factory: Callable[..., Any],
        brokers: str, tmp_path: Path) -> None:
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 5, 1)])
    running = api_factory(topics, tmp_path / "replica")
    running.wait_serving()
    second = ApiServer(replica_settings(brokers, topics, tmp_path / "replica"))
    with pytest.raises(DataDirInUse, match=rf"data dir {tmp_path}/replica is in use"):
        asyncio.run(second.start())
    assert second.port == 0  # refused before it listened
    with running.client() as client:
        assert client.get("web", "SKU-1").availability.ats == 5


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "rocksdb-only"])
def test_channel_reads_follow_every_write_and_survive_a_reopen(tmp_path: Path,
                                                               in_memory: bool) -> None:
    """Get/BatchGet read the in-memory copy when it is on: it must hold exactly what
    RocksDB holds, after puts, overwrites, deletes and a reopen."""
    from availability_api.store import StoreChanges

    store = ReplicaStore(tmp_path, "p", "c", channels_in_memory=in_memory)
    store.write(StoreChanges(channels={"web|A": b"a1", "web|B": b"b1", "web|C": b"c1"},
                             offsets={("c", 0): 3}))
    store.write(StoreChanges(channels={"web|A": b"a2", "web|B": None}, offsets={("c", 0): 5}))
    assert store.channel_frames(["web|A", "web|B", "web|C", "web|D"]) == [b"a2", None, b"c1",
                                                                        None]
    assert store.channel_frame("web|A") == b"a2"
    assert store.channels_in_memory == ((2, len("web|A") + 2 + len("web|C") + 2)
                                        if in_memory else None)
    store.close()
    for reopened_in_memory in (True, False):
        reopened = ReplicaStore(tmp_path, "p", "c", channels_in_memory=reopened_in_memory)
        assert reopened.channel_frames(["web|A", "web|B", "web|C"]) == [b"a2", None, b"c1"]
        assert reopened.offsets() == {("c", 0): 5}
        reopened.close()
