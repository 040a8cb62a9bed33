"""The systems under test, each started as its own process on fresh output topics.

Why subprocesses for all of them: the same start-up accounting (Python start, imports,
Kafka connection) and no GIL shared with the benchmark driver, which only polls end
offsets while a system runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from availability.processes import stop_process
from availability_contracts.topics import TopicNames

ENGINE_1 = "engine-1p"
ENGINE_2 = "engine-2p"
RELEASE_1 = "release-1p"
RELEASE_2 = "release-2p"
LOOP = "loop"
QUIX = "quix"
ALL_SYSTEMS = (RELEASE_1, RELEASE_2, ENGINE_1, ENGINE_2, LOOP, QUIX)
PEERS = (LOOP, QUIX)
"""Run with the project's pure-Python codec and domain (``AVAILABILITY_PURE_PYTHON``),
as a team building the same on those tools would; the engine uses its compiled hot path."""

RELEASE_COMMIT = "a393a11a5de4d1a73bdfe5f179e1d6c2ae979205"
"""v0.1, the engine before the performance work: the baseline the goals are relative to,
run from a git worktree of that commit with this venv's packages."""
REPO = Path(__file__).resolve().parents[1]

LABELS = {
    RELEASE_1: "previous release (v0.1), 1 process",
    RELEASE_2: "previous release (v0.1), 2 processes",
    ENGINE_1: "availability engine, 1 process",
    ENGINE_2: "availability engine, 2 processes",
    LOOP: "hand-written confluent-kafka loop (baseline)",
    QUIX: "Quix Streams 3.28 app (peer)",
}


@dataclass
class Running:
    """A started system: its process group, log file and launch time (wall clock)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    launched: float
    work: Path
    owns_work: bool

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM the group (clean stop: flush, commit), SIGKILL if it hangs."""
        return stop_process(self.process, timeout=timeout, group=True)

    def kill(self) -> None:
        """SIGKILL the whole process group: the crash case."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def cleanup(self) -> None:
        """Remove the work directory (recovery state: hundreds of MB) if start() made it."""
        if self.owns_work and self.process.poll() is not None:
            shutil.rmtree(self.work, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def argv_for(name: str, brokers: str, topics: TopicNames, rules: Path, work: Path,
             epoch_interval: float | None = None, group: str | None = None) -> list[str]:
    common = ["--brokers", brokers, "--rules", str(rules), "--events-topic", topics.events,
              "--dlq-topic", topics.dlq, "--positions-topic", topics.positions,
              "--channels-topic", topics.channels]
    if name in (ENGINE_1, ENGINE_2, RELEASE_1, RELEASE_2):
        processes = "1" if name in (ENGINE_1, RELEASE_1) else "2"
        argv = [sys.executable, "-m", "availability", "engine", *common,
                "--recovery-dir", str(work / "recovery"), "--processes", processes]
        if epoch_interval is not None:
            argv += ["--epoch-interval", str(epoch_interval)]
        return argv
    groups = ["--group", group] if group else []
    if name == LOOP:
        return [sys.executable, "-m", "benchmarks.handloop", *common, *groups]
    if name == QUIX:
        return [sys.executable, "-m", "benchmarks.quix_app", *common, *groups]
    raise ValueError(f"unknown system {name!r}; known: {', '.join(ALL_SYSTEMS)}")


def start(name: str, brokers: str, topics: TopicNames, rules: Path, work: Path | None = None,
          epoch_interval: float | None = None, group: str | None = None) -> Running:
    """Launch ``name`` reading ``topics.events`` from the beginning, writing the others.

    ``work`` holds the engine's recovery directory and the log; reuse it to restart
    an engine from its recovery state. ``group``: the consumer group of the loop and
    Quix (the engine keeps its offsets in its recovery state).
    """
    owns_work = work is None
    work = work or Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / f"{name}.log"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if name in PEERS:
        env["AVAILABILITY_PURE_PYTHON"] = "1"  # see PEERS
    cwd = None
    if name in (RELEASE_1, RELEASE_2):
        cwd = release_checkout()
        env["PYTHONPATH"] = str(cwd)  # its packages shadow this checkout's
    log = log_path.open("ab")
    launched = time.time()
    process = subprocess.Popen(argv_for(name, brokers, topics, rules, work, epoch_interval,
                                        group),
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                               start_new_session=True)
    log.close()
    return Running(name, process, log_path, launched, work, owns_work)


def release_checkout(commit: str = RELEASE_COMMIT) -> Path:
    """A worktree of the previous release (made once, git-ignored), to run it side by side."""
    path = REPO / "benchmarks" / f".release-{commit[:12]}"
    if not (path / "availability").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False,
                       capture_output=True)
        made = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--force", "--detach",
                               str(path), commit], capture_output=True, text=True)
        if made.returncode != 0:
            raise RuntimeError(f"cannot check out the previous release {commit[:12]} into "
                               f"{path}: {made.stderr.strip()} (a shallow clone lacks it: "
                               "`git fetch --unshallow`, or leave release-* out of --systems)")
    return path
