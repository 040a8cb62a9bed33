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
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig

from availability_contracts.times import HOUR_MS, MINUTE_MS
from availability_domain.rules import RulesError, load_rules
from dataflows import metrics
from dataflows.cluster import (
    CHECK_PORT_OFFSET,
    ClusterError,
    ClusterSpec,
    MemberReport,
    StartupCheck,
    cluster_problems,
    merged_runs,
    partitions_to_create,
)
from dataflows.flow import build_flow
from dataflows.kafka_source import STOP_REQUESTED
from dataflows.settings import (
    RECOVERY_PARTITIONS_PER_MEMBER,
    EngineSettings,
    default_recovery_partitions,
)
from dataflows.sku_logic import DamagedSnapshot, RunContext
from dataflows.state_dir import RecoveryDir, StateDirError, VersionClock


class PeerLost(ClusterError):
    """A member's connection to a peer broke: Bytewax cannot go on with fewer members."""

    code = "peer_lost"


RELOAD_REQUESTED = threading.Event()
"""Set on SIGHUP with a valid rules file: the engine stops cleanly, then the command
starts itself again in the same process (``exec``), which republishes what the new rules
change (see docs/semantics.md)."""


SIGNALLED = threading.Event()
"""A stop signal arrived (a stop asked by a cluster peer is not one)."""

REPEAT_WINDOW_S = 2.0
"""A stop signal this soon after the first is the same request delivered twice (a
harness or supervisor that signals again while waiting, a process-group SIGINT that
also reaches a supervised member through its parent): it does not abort."""

_first_signal_at: list[float] = []


def _request_stop(signum: int, frame: object) -> None:
    """First signal: let the flow drain and finish its epoch; another one, at least
    :data:`REPEAT_WINDOW_S` later, aborts."""
    if SIGNALLED.is_set():
        if time.monotonic() - _first_signal_at[0] < REPEAT_WINDOW_S:
            return
        raise KeyboardInterrupt
    _first_signal_at[:] = [time.monotonic()]
    SIGNALLED.set()
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


def _refuse_member_reload(signum: int, frame: object) -> None:
    """One member cannot change rules alone: its peers would publish by the old ones."""
    print("engine: SIGHUP ignored: a member started with --addresses takes new rules when "
          "every member is restarted (the start-up check refuses members with different "
          "rules)", file=sys.stderr, flush=True)


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


@dataclass(frozen=True)
class Membership:
    """This process's place in a Bytewax cluster, and what it checks its peers against."""

    spec: ClusterSpec
    events_partitions: int
    kafka_cluster: str = ""
    """The Kafka cluster id the member sees (members must read the same Kafka)."""
    supervised: bool = False
    """Started by ``--processes``: the parent handles SIGHUP and restarts."""
    check_timeout_s: float | None = None
    """How long to wait for every peer at the start-up check (None: as long as it takes)."""


def _member_report(settings: EngineSettings, state_dir: RecoveryDir, rules_fingerprint: str,
                   addresses: tuple[str, ...], membership: Membership | None,
                   recovery_partitions: int) -> MemberReport:
    topics = settings.topics
    partitions, problems = state_dir.scan_partitions()
    return MemberReport(
        process_id=state_dir.process_id,
        addresses=addresses,
        recovery_dir=str(state_dir.path),
        rules_fingerprint=rules_fingerprint,
        topics=(topics.events, topics.dlq, topics.positions, topics.channels),
        events_partitions=membership.events_partitions if membership else 0,
        partitions=partitions,
        partitions_wanted=recovery_partitions,
        runs=state_dir.runs(),
        version_floor=state_dir.version_floor(),
        settings={
            "--dedupe-horizon-hours": f"{settings.dedupe_horizon_ms / HOUR_MS:g}",
            "--lateness-horizon-hours": f"{settings.lateness_horizon_ms / HOUR_MS:g}",
            "--max-future-skew-minutes": f"{settings.max_future_skew_ms / MINUTE_MS:g}",
            "--recovery-partitions": str(settings.recovery_partitions
                                         or f"{RECOVERY_PARTITIONS_PER_MEMBER} per member"),
            "the wire format": "schema registry" if settings.schema_registry else "plain Avro",
            "the Kafka cluster (id)": membership.kafka_cluster if membership else "",
        },
        problems=tuple(problems),
        nonce=secrets.token_hex(8),
    )


def prepare_recovery(settings: EngineSettings, state_dir: RecoveryDir, rules_fingerprint: str,
                     membership: Membership | None
                     ) -> tuple[int, dict[int, str], int, StartupCheck | None]:
    """Check the recovery partitions (with every peer's, in a cluster) and create this
    member's share of them on a fresh start.

    Returns the run number to record (every member records the same), the run ledger
    merged over the members, the highest version floor among them and, in a cluster,
    the check's listener (it stays, to hear of a peer that restarts or stops).
    """
    if membership is None:
        mine = _member_report(settings, state_dir, rules_fingerprint, ("this process",), None,
                              settings.recovery_partitions or default_recovery_partitions(1))
        reports = [mine]
        check = None
    else:
        spec = membership.spec
        mine = _member_report(settings, state_dir, rules_fingerprint, spec.addresses,
                              membership,
                              settings.recovery_partitions
                              or default_recovery_partitions(spec.members))
        check = StartupCheck(spec, mine, on_peer_stop=_stop_with_peer, stop=STOP_REQUESTED,
                             bind_host="127.0.0.1" if membership.supervised else "")
        reports = check.exchange(membership.check_timeout_s)
    problems = cluster_problems(reports)
    if problems:
        if check is not None:
            check.close()
        who = "the cluster's members disagree, so none of them starts" if check else \
            f"recovery dir {state_dir.path} cannot be resumed"
        raise ClusterError(f"{who}:\n  - " + "\n  - ".join(problems))
    count, share = partitions_to_create(reports, state_dir.process_id)
    if share:
        state_dir.create_partitions(count, share)
    if membership is not None:
        total = count or max(s.count for r in reports for s in r.partitions.values())
        print(f"engine: member {state_dir.process_id} of {len(reports)}: start-up check "
              f"passed; recovery {'created' if count else 'resumed'}, "
              f"{len(mine.partitions) + len(share)} of {total} partitions in "
              f"{state_dir.path}", flush=True)
    runs = merged_runs(reports)
    return max(runs, default=0) + 1, runs, max(r.version_floor for r in reports), check


def _stop_with_peer(message: str) -> None:
    if not STOP_REQUESTED.is_set():
        print(message, flush=True)
        STOP_REQUESTED.set()


def run_member(settings: EngineSettings, membership: Membership | None = None) -> None:
    """Run this process's part of the flow until SIGINT or SIGTERM asks it to stop."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _request_stop)
    rules = load_rules(settings.rules_path)
    context = RunContext(rules, rules.fingerprint())
    if membership is None:
        def reload(signum: int, frame: object) -> None:
            if rules_reload_accepted(settings.rules_path, context.rules_fingerprint):
                RELOAD_REQUESTED.set()
                STOP_REQUESTED.set()

        signal.signal(signal.SIGHUP, reload)
    elif membership.supervised:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervising parent reloads
    else:
        signal.signal(signal.SIGHUP, _refuse_member_reload)
    process_id = membership.spec.process_id if membership is not None else None
    if settings.metrics_port:  # before the check: a member waiting for its peers is alive
        metrics.serve(metrics.member_port(settings.metrics_port, process_id,
                                          membership is not None and membership.supervised),
                      settings.metrics_host)
    recovery = None
    if settings.recovery_dir is not None:
        state_dir = RecoveryDir(settings.recovery_dir, process_id or 0)
        state_dir.claim()
        run, known, floor, check = prepare_recovery(settings, state_dir,
                                                    context.rules_fingerprint, membership)
        if check is not None:
            def stop_all(signum: int, frame: object) -> None:
                if not SIGNALLED.is_set() and not STOP_REQUESTED.is_set():
                    check.tell_peers_to_stop()
                try:
                    _request_stop(signum, frame)
                except KeyboardInterrupt:
                    # Bytewax's abort (KeyboardInterrupt in cli_main) drops only this
                    # member's dataflow: its peers wait for that member's progress
                    # forever and it waits for them, joining its network threads. Exit
                    # as a kill -9 would: the peers see the lost member and exit 3.
                    print("engine: aborted", flush=True)
                    os._exit(130)

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, stop_all)
        run, history = state_dir.record_run(context.rules_fingerprint, run, known)
        context = RunContext(rules, context.rules_fingerprint, run, history,
                             state_dir.version_clock(floor), earlier_clock_ms=floor // 1000)
        recovery = RecoveryConfig(str(settings.recovery_dir))
    else:
        context = RunContext(rules, context.rules_fingerprint, next_version=VersionClock(None))
    tune_garbage_collector()
    os.environ["RUST_BACKTRACE"] = "0"  # a failing step is reported below, by name
    try:
        cli_main(
            build_flow(settings, context),
            workers_per_process=1,
            process_id=process_id,
            addresses=list(membership.spec.addresses) if membership is not None else None,
            epoch_interval=timedelta(seconds=settings.epoch_interval_s),
            recovery_config=recovery,
        )
    except (KeyboardInterrupt, StateDirError):
        raise
    except BaseException as exc:
        problem = storage_problem(settings.recovery_dir)
        if problem is not None:
            raise StateDirError(problem) from exc
        damaged = _damaged_snapshot(exc)
        if damaged is not None:
            raise StateDirError(f"recovery dir {settings.recovery_dir}: {damaged}") from exc
        if membership is not None and "thread panic" in str(exc):
            raise PeerLost(
                f"member {process_id} lost its connection to the cluster (a peer stopped "
                "or the network between members broke); start every member again: they "
                "resume from their recovery snapshots") from exc
        raise


def _damaged_snapshot(error: BaseException) -> DamagedSnapshot | None:
    """The damaged snapshot behind ``error``, if one is: Bytewax raises its own error
    for a failing step, with the step's exception as its cause."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, DamagedSnapshot):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


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


def free_port_pairs(count: int) -> list[int]:
    """``count`` ports ``p`` with ``p + 1`` free too (Bytewax's and the start-up check's)."""
    found: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(found) < count:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            held.append(first)
            port = first.getsockname()[1]
            second = socket.socket()
            try:
                second.bind(("127.0.0.1", port + CHECK_PORT_OFFSET))
            except OSError:
                second.close()
                continue
            held.append(second)
            found.append(port)
        return found
    finally:
        for sock in held:
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
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_port_pairs(processes))
    children = [
        subprocess.Popen([*member_argv, "--process-id", str(index), "--addresses", addresses,
                          "--supervised"],
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

