"""What the engine keeps next to Bytewax's recovery partitions, and why.

* ``engine-<process>.lock``: one writer per recovery dir. Two engines folding the same
  state would publish the same versions with different values.
* ``runs.json``: every start, with the fingerprint of the rules it ran with. A restored
  SKU compares it with the rules its last published numbers reflect, to decide what a
  restart must republish (see :func:`dataflows.sku_logic.republish_mode`).
* ``version-floor.<process>``: a lease on the version clock. Versions are publish times
  in microseconds; no version above the floor is ever handed out, and a restart starts
  above every floor, so versions keep increasing even if the wall clock steps back
  across a restart.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import IO

from availability_contracts.errors import AvailabilityError
from dataflows.cluster import PartitionSummary

LEASE_US = 5_000_000
"""How far ahead of the versions handed out the persisted floor is kept."""

_HELD_LOCKS: list[IO[str]] = []
"""Open lock files of this process: held until it exits, whoever dropped the object."""


class StateDirError(AvailabilityError, RuntimeError):
    """The recovery dir cannot be used; the message names the path and what is wrong."""

    code = "recovery_dir"


def _write_atomically(path: Path, text: str) -> None:
    """Write, fsync, rename: a crash leaves the old file or the new one, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise StateDirError(f"cannot write {path}: {exc.strerror or exc}") from exc


class VersionClock:
    """Hands out snapshot versions: ``max(previous + 1, now in microseconds)``.

    ``now`` never goes below ``floor`` (the highest lease any earlier run of this recovery
    dir persisted), and the lease is renewed before a version could pass it.
    """

    def __init__(self, floor_path: Path | None, floor: int = 0) -> None:
        self._floor_path = floor_path
        self._floor = floor
        self._leased = floor

    def __call__(self, previous: int) -> int:
        now = time.time_ns() // 1000
        if now < self._floor:
            now = self._floor
        version = previous + 1 if previous >= now else now
        if version >= self._leased:
            self._renew(version)
        return version

    def _renew(self, version: int) -> None:
        lease = version + LEASE_US
        if self._floor_path is not None:
            _write_atomically(self._floor_path, f"{lease}\n")
        self._leased = lease


class RecoveryDir:
    """The engine's own files in a recovery dir, for one cluster member."""

    def __init__(self, path: Path, process_id: int = 0) -> None:
        self.path = path
        self.process_id = process_id

    def claim(self) -> None:
        """Take this member's lock for the life of the process (the kernel drops it when
        the process dies, kill -9 included), or refuse naming who holds it."""
        self.check_writable()
        lock_path = self.path / f"engine-{self.process_id}.lock"
        handle = lock_path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StateDirError(
                f"recovery dir {self.path} is in use by another engine (pid {holder}, "
                f"lock {lock_path.name}); stop it first, or give this engine its own "
                "--recovery-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD_LOCKS.append(handle)

    def check_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(f"cannot create recovery dir {self.path}: "
                                f"{exc.strerror or exc}") from exc
        probe = self.path / f".probe-{self.process_id}-{secrets.token_hex(4)}"
        _write_atomically(probe, "ok\n")
        probe.unlink(missing_ok=True)

    def record_run(self, rules_fingerprint: str, run: int | None = None,
                   known: Mapping[int, str] | None = None) -> tuple[int, dict[int, str]]:
        """Add this start to ``runs.json``; return its number and every run's rules.

        A cluster's members agree on ``run`` and on the runs ``known`` to any of them
        (see :mod:`dataflows.cluster`), so every member's copy of the ledger, shared or
        not, says the same; recording the same run twice is harmless.
        """
        ledger = self.path / "runs.json"
        with (self.path / "runs.lock").open("a", encoding="utf-8") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            runs = self._read_runs(ledger)
            runs.update(known or {})
            if run is None:
                run = max(runs, default=0) + 1
            runs[run] = rules_fingerprint
            _write_atomically(ledger, json.dumps(
                {"runs": [[number, fingerprint] for number, fingerprint in sorted(runs.items())]}
            ) + "\n")
        return run, runs

    def runs(self) -> dict[int, str]:
        return self._read_runs(self.path / "runs.json")

    def partitions(self) -> dict[int, PartitionSummary]:
        """The Bytewax recovery partitions in this dir, as each file describes itself."""
        return self.scan_partitions()[0]

    def scan_partitions(self) -> tuple[dict[int, PartitionSummary], list[str]]:
        """The partitions, and what is wrong with the files (reported, not raised, so
        that every member of a cluster refuses alike).

        Bytewax takes every ``*.sqlite3`` file of the dir as a partition, whatever its
        name, so a stale copy under another name would be a second candidate.
        """
        found: dict[int, PartitionSummary] = {}
        problems: list[str] = []
        for part in sorted(self.path.glob("*.sqlite3")):
            try:
                with closing(sqlite3.connect(part, timeout=30)) as db:
                    rows = db.execute("SELECT part_index, part_count FROM parts").fetchall()
                    execution = db.execute("SELECT MAX(ex_num) FROM exs").fetchone()[0]
                    epochs = dict(db.execute("SELECT part_index, commit_epoch FROM commits"))
            except sqlite3.Error as exc:
                problems.append(f"recovery partition {part} cannot be read ({exc})")
                continue
            for index, count in rows:
                summary = PartitionSummary(int(count), int(execution or 0),
                                           int(epochs.get(index, 0)), part.name)
                other = found.get(int(index))
                if other is not None:
                    problems.append(f"{self.path} holds recovery partition {index} twice "
                                    f"({other.file} and {part.name}): Bytewax would take "
                                    "either; remove the stale one")
                found[int(index)] = summary
        return found, problems

    def create_partitions(self, count: int, indexes: Sequence[int]) -> None:
        """Create this member's share of a new recovery store of ``count`` partitions.

        Bytewax creates all partitions of a store at once; the ones this member does not
        keep are dropped. Each file appears by rename, so a peer listing a shared dir
        never opens a half-written one.
        """
        from bytewax.recovery import init_db_dir

        try:
            staging = Path(tempfile.mkdtemp(prefix=f".new-partitions-{self.process_id}-",
                                            dir=self.path))
        except OSError as exc:
            raise StateDirError(f"cannot create recovery partitions in {self.path}: "
                                f"{exc.strerror or exc}") from exc
        try:
            init_db_dir(staging, count)
            for index in indexes:
                os.replace(staging / f"part-{index}.sqlite3", self.path / f"part-{index}.sqlite3")
        except OSError as exc:
            raise StateDirError(f"cannot create recovery partitions in {self.path}: "
                                f"{exc.strerror or exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _read_runs(ledger: Path) -> dict[int, str]:
        if not ledger.exists():
            return {}
        try:
            data = json.loads(ledger.read_text(encoding="utf-8"))
            return {int(number): str(fingerprint) for number, fingerprint in data["runs"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateDirError(f"{ledger} is unreadable ({exc}); it records which rules "
                                "each run used: restore it, or start from an empty "
                                "--recovery-dir") from exc

    def version_floor(self) -> int:
        """The highest version lease any run of this dir persisted."""
        floors = []
        for path in self.path.glob("version-floor.*"):
            try:
                floors.append(int(path.read_text(encoding="utf-8").strip()))
            except (OSError, ValueError):
                continue  # a torn write is impossible (rename); skip foreign files
        return max(floors, default=0)

    def version_clock(self, cluster_floor: int = 0) -> VersionClock:
        """This member's clock, above every lease of this dir and of its peers' dirs."""
        return VersionClock(self.path / f"version-floor.{self.process_id}",
                            max(self.version_floor(), cluster_floor))
