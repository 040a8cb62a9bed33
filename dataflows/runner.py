"""Runs the dataflow: one process in place, or a Bytewax cluster of N processes.

A cluster member cannot survive the loss of a peer, so the parent supervises its
children: when one exits, the others are stopped and the engine exits non-zero; the
next start resumes every member from the shared recovery directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir

from availability_domain.rules import RulesError, load_rules
from dataflows import metrics
from dataflows.flow import build_flow
from dataflows.kafka_source import STOP_REQUESTED
from dataflows.settings import EngineSettings
from dataflows.sku_logic import RunContext
from dataflows.state_dir import RecoveryDir, StateDirError, VersionClock


def ensure_recovery_dir(path: Path, partitions: int) -> bool:
    """Create the recovery partitions on first use; return True when they were created."""
    path.mkdir(parents=True, exist_ok=True)
    if any(path.glob("part-*.sqlite3")):
        return False
    init_db_dir(path, partitions)
    return True


RELOAD_REQUESTED = threading.Event()
"""Set on SIGHUP with a valid rules file: the engine stops cleanly, then the command
starts itself again in the same process (``exec``), which republishes what the new rules
change (see docs/semantics.md)."""


def _request_stop(signum: int, frame: object) -> None:
    """First signal: let the flow drain and finish its epoch; a second one aborts."""
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt
    STOP_REQUESTED.set()


def rules_reload_accepted(rules_path: Path, current_fingerprint: str) -> bool:
    """Check the rules file a SIGHUP asks for; say why it is not taken when it is not.

    A file that does not load leaves the engine running on the rules it has: a typo in
    a reload must not stop availability.
    """
    try:
        fingerprint = load_rules(rules_path).fingerprint()
    except (RulesError, OSError) as exc:
        print(f"engine: SIGHUP: rules not reloaded, still running with the previous ones: "
              f"{exc}", file=sys.stderr, flush=True)
        return False
    if fingerprint == current_fingerprint:
        print(f"engine: SIGHUP: {rules_path} has the rules in use; nothing to reload",
              flush=True)
        return False
    print(f"engine: SIGHUP: reloading rules from {rules_path}: stopping cleanly, then "
          "restarting in place", flush=True)
    return True


def tune_garbage_collector() -> None:
    """Collect young objects less often.

    The fold keeps millions of small long-lived containers (positions, reservations,
    dedupe ids); with CPython's default thresholds the cyclic collector re-scans them
    so often that it took a third of the engine's CPU in a 100k-SKU drain. The state
    holds no reference cycles, so rarer collections cost memory only briefly.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)


def run_member(settings: EngineSettings, process_id: int | None = None,
               addresses: Sequence[str] | None = None) -> None:
    """Run this process's part of the flow until SIGINT or SIGTERM asks it to stop."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _request_stop)
    rules = load_rules(settings.rules_path)
    context = RunContext(rules, rules.fingerprint())
    if process_id is None:
        def reload(signum: int, frame: object) -> None:
            if rules_reload_accepted(settings.rules_path, context.rules_fingerprint):
                RELOAD_REQUESTED.set()
                STOP_REQUESTED.set()

        signal.signal(signal.SIGHUP, reload)
    else:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervising parent reloads
    recovery = None
    if settings.recovery_dir is not None:
        state_dir = RecoveryDir(settings.recovery_dir, process_id or 0)
        state_dir.claim()
        run, history = state_dir.record_run(context.rules_fingerprint)
        context = RunContext(rules, context.rules_fingerprint, run, history,
                             state_dir.version_clock())
        recovery = RecoveryConfig(str(settings.recovery_dir))
    else:
        context = RunContext(rules, context.rules_fingerprint, next_version=VersionClock(None))
    tune_garbage_collector()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port + (process_id or 0), settings.metrics_host)
    os.environ["RUST_BACKTRACE"] = "0"  # a failing step is reported below, by name
    try:
        cli_main(
            build_flow(settings, context),
            workers_per_process=1,
            process_id=process_id,
            addresses=list(addresses) if addresses else None,
            epoch_interval=timedelta(seconds=settings.epoch_interval_s),
            recovery_config=recovery,
        )
    except (KeyboardInterrupt, StateDirError):
        raise
    except BaseException as exc:
        problem = storage_problem(settings.recovery_dir)
        if problem is not None:
            raise StateDirError(problem) from exc
        raise


def storage_problem(recovery_dir: Path | None) -> str | None:
    """Why the recovery dir cannot take writes (full, read-only, gone), if it cannot.

    Bytewax reports a failed snapshot write as a bare panic; this names the path.
    """
    if recovery_dir is None:
        return None
    try:
        stats = os.statvfs(recovery_dir)
        free = stats.f_bavail * stats.f_frsize
    except OSError:
        free = None
    if free is not None and free < 1 << 20:
        return (f"recovery dir {recovery_dir} is on a full file system ({free} bytes free): "
                "the engine cannot write its recovery snapshots")
    try:
        RecoveryDir(recovery_dir).check_writable()
    except StateDirError as exc:
        if "No space left" in str(exc):
            return (f"recovery dir {recovery_dir} is on a full file system: the engine "
                    "cannot write its recovery snapshots")
        return f"{exc}: the engine cannot write its recovery snapshots"
    return None


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _stop_with_parent() -> None:
    """In a member, before exec: get SIGTERM when the supervising parent dies (even by
    kill -9), so no member runs on unsupervised (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)


def run_cluster(member_argv: Sequence[str], processes: int, rules_path: Path | None = None
                ) -> int:
    """Start ``processes`` members (``member_argv`` + --process-id/--addresses) and supervise.

    SIGHUP with a valid, changed ``rules_path`` stops the members cleanly and sets
    :data:`RELOAD_REQUESTED`, for the caller to start the cluster again.
    """
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(processes))
    children = [
        subprocess.Popen([*member_argv, "--process-id", str(index), "--addresses", addresses],
                         preexec_fn=_stop_with_parent)
        for index in range(processes)
    ]

    def stop_children(signum: int = signal.SIGINT, frame: object = None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)

    fingerprint = load_rules(rules_path).fingerprint() if rules_path is not None else ""

    def reload(signum: int, frame: object) -> None:
        if rules_path is not None and rules_reload_accepted(rules_path, fingerprint):
            RELOAD_REQUESTED.set()
            stop_children()

    previous = {sig: signal.signal(sig, stop_children) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        stop_children()
        deadline = time.monotonic() + 30
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [child.returncode for child in children]
    interrupted = all(code in (0, 130, -signal.SIGINT) for code in codes)
    if not interrupted:
        print(f"engine: cluster members exited with {codes}", file=sys.stderr)
    return 0 if interrupted else 1


def member_command() -> list[str]:
    return [sys.executable, "-m", "availability"]

