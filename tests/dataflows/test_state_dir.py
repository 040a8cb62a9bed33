"""The engine's files in a recovery dir: one writer, the run ledger, the version lease."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataflows.state_dir import LEASE_US, RecoveryDir, StateDirError, VersionClock


def test_versions_strictly_increase_and_start_above_every_persisted_lease(tmp_path: Path
                                                                          ) -> None:
    clock = RecoveryDir(tmp_path).version_clock()
    versions = [clock(0)]
    for _ in range(1000):
        versions.append(clock(versions[-1]))
    assert versions == sorted(set(versions))
    assert abs(versions[0] - time.time_ns() // 1000) < 60_000_000
    lease = int((tmp_path / "version-floor.0").read_text())
    assert lease > versions[-1]
    (tmp_path / "version-floor.1").write_text(f"{versions[-1] + 10 * LEASE_US}\n")
    later = RecoveryDir(tmp_path).version_clock()
    assert later(0) >= versions[-1] + 10 * LEASE_US


def test_a_clock_stepped_back_still_gives_a_key_a_higher_version() -> None:
    clock = VersionClock(None)
    ahead = time.time_ns() // 1000 + 3_600_000_000
    assert clock(ahead) == ahead + 1


def test_second_engine_on_a_recovery_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from dataflows.state_dir import "
         "RecoveryDir; RecoveryDir(Path(sys.argv[1])).claim(); print('held', flush=True); "
         "time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StateDirError) as refused:
            RecoveryDir(tmp_path).claim()
        assert str(tmp_path) in str(refused.value)
        assert f"pid {holder.pid}" in str(refused.value)
        RecoveryDir(tmp_path, process_id=1).claim()  # another member's lock is free
    finally:
        holder.kill()
        holder.wait()
    RecoveryDir(tmp_path).claim()  # the kernel released the dead holder's lock


def test_run_ledger_numbers_runs_and_keeps_their_rules(tmp_path: Path) -> None:
    state_dir = RecoveryDir(tmp_path)
    assert state_dir.record_run("a") == (1, {1: "a"})
    assert state_dir.record_run("b") == (2, {1: "a", 2: "b"})
    (tmp_path / "runs.json").write_text("{not json")
    with pytest.raises(StateDirError, match=r"runs\.json is unreadable"):
        state_dir.record_run("c")


def test_read_only_recovery_dir_is_named(tmp_path: Path) -> None:
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
        target = Path("/proc/version-recovery")  # root ignores file modes; /proc refuses all
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    with pytest.raises(StateDirError, match=str(target)):
        RecoveryDir(target).check_writable()
