"""A recovery dir that cannot take writes ends the engine with an error naming the path,
never a bare panic; a second engine on a recovery dir in use is refused."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from availability_contracts.topics import TopicNames
from availability_domain.events import parse_event
from dataflows.sku_logic import SNAPSHOT_MAGIC

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "examples" / "rules.toml"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of this test's own (root only: the suite runs as root in CI)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}): needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _exited(engine: Any) -> int | None:
    return engine.process.poll()


def test_read_only_recovery_dir_is_named(topics: TopicNames, small_disk: Path,
                                         engine_factory: Callable[..., Any],
                                         wait_for: Callable[..., Any]) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    engine = engine_factory(topics, RULES, recovery_dir=small_disk / "recovery").start()
    code = wait_for(lambda: _exited(engine), 60, "the engine to refuse the read-only dir")
    assert code != 0
    log = engine.log()
    assert str(small_disk / "recovery") in log, log
    assert "Traceback" not in log and "panicked" not in log, log


def test_full_disk_while_running_is_named(topics: TopicNames, small_disk: Path,
                                          engine_factory: Callable[..., Any],
                                          wait_for: Callable[..., Any],
                                          publish_events: Callable[..., int]) -> None:
    recovery = small_disk / "recovery"
    engine = engine_factory(topics, RULES, recovery_dir=recovery).start()
    wait_for(lambda: "recovery" in engine.log(), 30, "the engine to start")
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True,
                   check=False)
    now = int(time.time() * 1000)
    publish_events(topics.events, [
        parse_event({"event_id": f"e{n}", "event_type": "RECEIPT", "occurred_at": now,
                     "source": "t", "sku": f"SKU-{n}", "location_id": "DC-EAST",
                     "quantity": 1})
        for n in range(2000)])
    code = wait_for(lambda: _exited(engine), 90, "the engine to stop on the full disk")
    assert code != 0
    log = engine.log()
    last = log.strip().splitlines()[-1]
    assert str(recovery) in last and "full file system" in last, log
    assert "Traceback" not in log and "stack backtrace" not in log, log


def test_second_engine_on_the_same_recovery_dir_is_refused(
        topics: TopicNames, tmp_path: Path, engine_factory: Callable[..., Any],
        wait_for: Callable[..., Any]) -> None:
    recovery = tmp_path / "shared-recovery"
    first = engine_factory(topics, RULES, recovery_dir=recovery).start()
    wait_for(lambda: "recovery" in first.log(), 30, "the first engine to start")
    time.sleep(2)
    second = engine_factory(topics, RULES, recovery_dir=recovery).start()
    code = wait_for(lambda: _exited(second), 60, "the second engine to be refused")
    assert code != 0
    log = second.log()
    assert str(recovery) in log and f"pid {first.process.pid}" in log, log
    assert "Traceback" not in log, log
    assert first.process.poll() is None, first.log()
    assert first.stop() == 0


def _damage_snapshot_of(recovery: Path, sku: str, where: str) -> bool:
    """Change one byte in the header or the state of ``sku``'s newest recovery snapshot;
    whether one was found. Bytewax stores the pickle of the bytes
    ``SkuAvailabilityLogic`` returns, so a byte near the end lies in the SKU's
    compressed state."""
    for part in sorted(recovery.glob("part-*.sqlite3")):
        with sqlite3.connect(part) as db:
            row = db.execute(
                "SELECT rowid, ser_change FROM snaps WHERE step_id LIKE '%fold%' AND "
                "state_key = ? AND ser_change IS NOT NULL ORDER BY snap_epoch DESC LIMIT 1",
                (sku,)).fetchone()
            if row is None:
                continue
            blob = bytearray(row[1])
            at = blob.index(SNAPSHOT_MAGIC) + len(SNAPSHOT_MAGIC) + 3 if where == "header" else -8
            blob[at] ^= 0x5A
            db.execute("UPDATE snaps SET ser_change = ? WHERE rowid = ?", (bytes(blob), row[0]))
            return True
    return False


@pytest.mark.parametrize(("where", "error"), [
    ("state", "of SKU 'SKU-1' is damaged (its state does not match its checksum)"),
    ("header", "of a SKU is damaged (its header does not match its checksum)"),
])
def test_a_damaged_recovery_snapshot_stops_the_engine_with_what_to_do(
        where: str, error: str, topics: TopicNames, tmp_path: Path,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any],
        publish_events: Callable[..., int]) -> None:
    """The checksums catch a changed byte that would still decompress and unpickle: the
    restarted engine stops (at the restart for a header, which every restart reads; at
    the SKU's first event for a state, naming the SKU) instead of folding on from a
    state it cannot trust, and the log's last line says what to do."""
    recovery = tmp_path / "recovery"
    now = int(time.time() * 1000)

    def receipt(n: int, sku: str) -> Any:
        return parse_event({"event_id": f"e{n}", "event_type": "RECEIPT", "occurred_at": now,
                            "source": "t", "sku": sku, "location_id": "DC-EAST",
                            "quantity": 1})

    engine = engine_factory(topics, RULES, recovery_dir=recovery).start()
    publish_events(topics.events, [receipt(n, f"SKU-{n % 3}") for n in range(30)])
    wait_for(lambda: _snapshot_count(recovery, "SKU-1"), 60,
             "a recovery snapshot of SKU-1")
    assert engine.stop() == 0, engine.log()
    assert _damage_snapshot_of(recovery, "SKU-1", where)
    restarted = engine_factory(topics, RULES, recovery_dir=recovery).start()
    publish_events(topics.events, [receipt(100, "SKU-1")])
    code = wait_for(lambda: _exited(restarted), 90, "the engine to refuse the damaged snapshot")
    assert code != 0
    log = restarted.log()
    assert f"the recovery snapshot {error}" in log, log
    last = log.strip().splitlines()[-1]
    assert str(recovery) in last and "rebuild from the event log" in last, log
    assert "Traceback" not in log, log


def _snapshot_count(recovery: Path, sku: str) -> int:
    count = 0
    for part in recovery.glob("part-*.sqlite3"):
        try:
            with sqlite3.connect(part) as db:
                count += db.execute(
                    "SELECT COUNT(*) FROM snaps WHERE step_id LIKE '%fold%' AND state_key = ? "
                    "AND ser_change IS NOT NULL", (sku,)).fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            continue
    return count
