"""Cluster members check each other before Bytewax starts, and agree on a run.

Bytewax cannot tell two members that were started with different rules, topics or
cluster sizes apart from a healthy cluster, and a member whose recovery volume was
replaced by an empty one would silently start its partitions again from nothing.
So every member first sends every peer a :class:`MemberReport` (over TCP, on the port
after its cluster address: Bytewax itself listens on the address), and every member
runs the same :func:`cluster_problems` on the same set of reports: either all of them
start, or all of them refuse with the same message.

The exchange also gives the members one run ledger and one version floor, whether
their recovery dirs are one shared volume or one volume per host (see
docs/operations.md, "Running a cluster").
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from availability_contracts.errors import AvailabilityError

CHECK_PORT_OFFSET = 1
"""The start-up check listens on the member's Bytewax port + this."""

PROTOCOL = "availability-engine/cluster-check/1"
EXIT_PEER_LOST = 3
"""Exit status of a member whose cluster lost a peer (restart all members)."""
CONFLICT = "conflicting-rules"
"""Ledger entry of a run two members recorded with different rules: matches no rules,
so a SKU whose snapshot is older republishes everything (the safe reading)."""


class ClusterError(AvailabilityError, RuntimeError):
    """The cluster cannot start; the message says which member differs and how."""

    code = "cluster"


@dataclass(frozen=True)
class ClusterSpec:
    """This member's place in the cluster: ``--process-id`` and ``--addresses``."""

    process_id: int
    addresses: tuple[str, ...]

    @classmethod
    def parse(cls, process_id: int, addresses: str) -> ClusterSpec:
        entries = tuple(entry.strip() for entry in addresses.split(";") if entry.strip())
        if not entries:
            raise ClusterError("--addresses is empty: give every member's host:port, "
                               "separated by ';', the same list on every member")
        endpoints = []
        for entry in entries:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65535:
                raise ClusterError(f"--addresses entry {entry!r} is not host:port (port "
                                   "1-65534; the next port is the start-up check's)")
            if ":" in host and not (host.startswith("[") and host.endswith("]")):
                raise ClusterError(f"--addresses entry {entry!r}: write an IPv6 address in "
                                   "brackets, e.g. [fd00::1]:2101")
            endpoints.append((host.lower(), int(port)))
        duplicates = sorted({entry for entry in entries if entries.count(entry) > 1})
        if duplicates:
            raise ClusterError(f"--addresses names {', '.join(duplicates)} more than once")
        for host, number in endpoints:
            if (host, number + CHECK_PORT_OFFSET) in endpoints:
                raise ClusterError(f"--addresses has {host}:{number} and {host}:{number + 1}: a "
                                   f"member also listens on its port + 1 (the start-up "
                                   "check); leave a gap of 2 between members on one host")
        if not 0 <= process_id < len(entries):
            raise ClusterError(f"--process-id {process_id} is not a member of --addresses "
                               f"({len(entries)} members: ids 0-{len(entries) - 1})")
        return cls(process_id, entries)

    @property
    def members(self) -> int:
        return len(self.addresses)

    def check_address(self, index: int) -> tuple[str, int]:
        host, _, port = self.addresses[index].rpartition(":")
        return host.strip("[]"), int(port) + CHECK_PORT_OFFSET


@dataclass(frozen=True)
class PartitionSummary:
    """What a recovery partition file says about itself."""

    count: int
    """How many partitions the recovery store was created with."""
    execution: int
    """The newest Bytewax execution (run) recorded in it."""
    epoch: int
    """The epoch its snapshots are committed up to."""
    file: str = ""
    """Its file name in the member's recovery dir."""

    @property
    def pristine(self) -> bool:
        """Created, never run: nothing is lost by creating it again."""
        return self.execution == 0 and self.epoch == 0

    def same_data(self, other: PartitionSummary) -> bool:
        return (self.count, self.execution, self.epoch) == (other.count, other.execution,
                                                             other.epoch)


@dataclass(frozen=True)
class MemberReport:
    """Everything a member must agree on with its peers before it may start."""

    process_id: int
    addresses: tuple[str, ...]
    recovery_dir: str
    rules_fingerprint: str
    topics: tuple[str, ...]
    events_partitions: int
    partitions: Mapping[int, PartitionSummary]
    """The recovery partitions this member's recovery dir holds."""
    partitions_wanted: int
    """``--recovery-partitions`` (how many to create on a fresh start)."""
    runs: Mapping[int, str] = field(default_factory=dict)
    version_floor: int = 0
    settings: Mapping[str, str] = field(default_factory=dict)
    """Settings that change the numbers or the records (horizons, wire format, the Kafka
    cluster): members must agree on them."""
    problems: tuple[str, ...] = ()
    """What this member found wrong in its own recovery dir."""
    nonce: str = ""
    """Random per start: a peer asking again with another one was restarted."""
    stopping: bool = False
    """Sent by a member asked to stop: its peers stop cleanly too (a Bytewax cluster
    finishes an epoch only with every member)."""
    protocol: str = PROTOCOL

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["partitions"] = {str(k): asdict(v) for k, v in self.partitions.items()}
        data["runs"] = {str(k): v for k, v in self.runs.items()}
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> MemberReport:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("protocol") != PROTOCOL:
            raise ValueError("not an engine start-up check")
        return cls(
            process_id=int(data["process_id"]),
            addresses=tuple(data["addresses"]),
            recovery_dir=str(data["recovery_dir"]),
            rules_fingerprint=str(data["rules_fingerprint"]),
            topics=tuple(data["topics"]),
            events_partitions=int(data["events_partitions"]),
            partitions={int(k): PartitionSummary(**v) for k, v in data["partitions"].items()},
            partitions_wanted=int(data["partitions_wanted"]),
            runs={int(k): str(v) for k, v in data["runs"].items()},
            version_floor=int(data["version_floor"]),
            settings={str(k): str(v) for k, v in data.get("settings", {}).items()},
            problems=tuple(str(text) for text in data.get("problems", ())),
            nonce=str(data["nonce"]),
            stopping=bool(data.get("stopping", False)),
        )


def _name(report: MemberReport) -> str:
    return f"member {report.process_id} ({report.addresses[report.process_id]})"


def cluster_problems(reports: Sequence[MemberReport]) -> list[str]:
    """Why these members must not start together (empty: they may).

    Pure, and run by every member on the same reports, so all of them decide alike.
    """
    first = reports[0]
    problems: list[str] = []
    ids = sorted(report.process_id for report in reports)
    if ids != list(range(len(first.addresses))):
        problems.append(f"member ids {ids} are not 0-{len(first.addresses) - 1}: each "
                        "member needs its own --process-id")
    for report in reports[1:]:
        if report.addresses != first.addresses:
            problems.append(f"{_name(report)} was started with --addresses "
                            f"{';'.join(report.addresses)}, {_name(first)} with "
                            f"{';'.join(first.addresses)}: every member needs the same list")
        if report.rules_fingerprint != first.rules_fingerprint:
            problems.append(f"{_name(report)} and {_name(first)} loaded different rules "
                            "(compare their --rules files): members with other rules "
                            "would publish other numbers for the same SKU")
        if report.topics != first.topics:
            problems.append(f"{_name(report)} uses topics {', '.join(report.topics)}, "
                            f"{_name(first)} {', '.join(first.topics)}")
        for name in sorted(set(report.settings) | set(first.settings)):
            if report.settings.get(name) != first.settings.get(name):
                problems.append(f"{_name(report)} runs with {name} "
                                f"{report.settings.get(name, '(unset)')}, {_name(first)} "
                                f"with {first.settings.get(name, '(unset)')}")
        if report.events_partitions != first.events_partitions:
            problems.append(f"{_name(report)} sees {report.events_partitions} partitions "
                            f"of {first.topics[0]}, {_name(first)} "
                            f"{first.events_partitions}: are they on the same Kafka?")
    for report in reports:
        problems.extend(f"{_name(report)}: {text}" for text in report.problems)
    members = len(first.addresses)
    if first.events_partitions % members:
        problems.append(f"{first.topics[0]} has {first.events_partitions} partitions, not "
                        f"divisible by the {members} members (a member with fewer "
                        "partitions stalls the cluster's progress)")
    problems.extend(_partition_problems(reports))
    return problems


def _partition_problems(reports: Sequence[MemberReport]) -> list[str]:
    holders: dict[int, list[tuple[MemberReport, PartitionSummary]]] = {}
    for report in reports:
        for index, summary in report.partitions.items():
            holders.setdefault(index, []).append((report, summary))
    if not holders:
        return []
    problems = []
    counts = {summary.count for held in holders.values() for _, summary in held}
    if len(counts) > 1:
        detail = "; ".join(
            f"{_name(report)}: {', '.join(str(i) for i in sorted(report.partitions))} of "
            f"{sorted({s.count for s in report.partitions.values()})}"
            for report in reports if report.partitions)
        return [f"the recovery dirs hold partitions of different recovery stores ({detail}): "
                "every member's --recovery-dir must come from the same cluster"]
    count = counts.pop()
    missing = sorted(set(range(count)) - set(holders))
    fresh = all(summary.pristine for held in holders.values() for _, summary in held)
    if missing and not fresh:
        empty = [f"{_name(r)} at {r.recovery_dir}" for r in reports if not r.partitions]
        where = f"; holding none: {', '.join(empty)}" if empty else ""
        problems.append(
            f"recovery partitions {missing} of {count} are in no member's --recovery-dir"
            f"{where}. Restore the missing part-N.sqlite3 files (a replaced or wiped "
            "volume, a member removed without moving its partitions), or start the whole "
            "cluster again from empty recovery dirs and new output topics")
    for index, held in sorted(holders.items()):
        if any(not summary.same_data(held[0][1]) for _, summary in held):
            copies = ", ".join(f"{_name(report)} ({report.recovery_dir}/{summary.file}: "
                               f"execution {summary.execution}, epoch {summary.epoch})"
                               for report, summary in held)
            problems.append(f"recovery partition {index} has different copies on {copies}: "
                            "keep only the newest copy")
    return problems


def partitions_to_create(reports: Sequence[MemberReport], process_id: int) -> tuple[int, list[int]]:
    """On a fresh cluster: (partition count, the partitions this member creates).

    Member ``i`` creates the partitions ``p`` with ``p % members == i``, so a shared
    volume and per-host volumes both end up with each partition exactly once. A store
    that was created but never ran (a first start that failed half-way) is completed
    the same way; one that ran is never added to.
    """
    held = {index: summary for report in reports
            for index, summary in report.partitions.items()}
    if any(not summary.pristine for summary in held.values()):
        return 0, []
    count = (next(iter(held.values())).count if held
             else max(report.partitions_wanted for report in reports))
    members = len(reports)
    share = [p for p in range(count) if p % members == process_id and p not in held]
    return (count, share) if share or not held else (0, [])


def merged_runs(reports: Sequence[MemberReport]) -> dict[int, str]:
    """Every member's run ledger in one (with per-host volumes each has its own copy)."""
    runs: dict[int, str] = {}
    for report in reports:
        for run, fingerprint in report.runs.items():
            if runs.setdefault(run, fingerprint) != fingerprint:
                runs[run] = CONFLICT
    return runs


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def _receive(sock: socket.socket, limit: int = 1 << 22) -> bytes:
    def exactly(size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = sock.recv(size - len(chunks))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            chunks += chunk
        return bytes(chunks)

    (size,) = struct.unpack(">I", exactly(4))
    if size > limit:
        raise ValueError("report too large")
    return exactly(size)


class CheckStopped(ClusterError):
    """Asked to stop (a signal, or a peer stopping) before the cluster started."""

    code = "stopped"


class StartupCheck:
    """This member's side of the start-up check; its listener lives as long as the process.

    Every member asks every peer (sends its report, gets the peer's back) and answers
    every peer that asks; it is through once it has every peer's report and every peer
    has asked it, so no member leaves a peer waiting. A peer that restarts during the
    check is asked again. Afterwards the listener stays: a peer asking with another
    start ``nonce`` was restarted, and a Bytewax cluster cannot take a member back, so
    this member exits (without answering: the restarted peer waits for its next start)
    and the whole cluster meets again at the check.
    """

    def __init__(self, spec: ClusterSpec, mine: MemberReport,
                 say: Callable[[str], None] | None = None,
                 on_peer_restart: Callable[[str], None] | None = None,
                 on_peer_stop: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, bind_host: str = "") -> None:
        self.spec = spec
        self.mine = mine
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.on_peer_restart = on_peer_restart or _exit_for_restart
        self.on_peer_stop = on_peer_stop or (lambda message: None)
        self.stop = stop or threading.Event()
        self._nonces: dict[int, str] = {}
        """Each peer's nonce once the check is through (empty before)."""
        self._latest: dict[int, MemberReport] = {}
        """The newest report each peer sent when it asked."""
        self._asked: set[tuple[int, str]] = set()
        self._impostors: list[str] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        port = spec.check_address(spec.process_id)[1]
        try:
            if not bind_host and socket.has_dualstack_ipv6():
                self._listener = socket.create_server(("", port), family=socket.AF_INET6,
                                                      dualstack_ipv6=True,
                                                      backlog=max(8, spec.members))
            else:
                self._listener = socket.create_server((bind_host, port),
                                                      backlog=max(8, spec.members))
        except OSError as exc:
            raise ClusterError(f"cannot listen on port {port} for the members' start-up "
                               f"check ({exc.strerror or exc}): each member uses its "
                               "--addresses port and the next one") from None
        threading.Thread(target=self._answer, name="cluster-check", daemon=True).start()

    def _answer(self) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    theirs = MemberReport.from_bytes(_receive(conn))
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    self.say(f"engine: ignored a connection from {peer[0]} to the start-up "
                             f"check port: {exc}")
                    continue
                with self._lock:
                    known = self._nonces.get(theirs.process_id)
                if theirs.process_id == self.spec.process_id:
                    with self._lock:
                        self._impostors.append(peer[0])
                        self._changed.notify_all()
                    self.say(f"engine: {peer[0]} claims --process-id {theirs.process_id}, "
                             "this member's id: two members were started with one id")
                    continue
                if not 0 <= theirs.process_id < self.spec.members:
                    continue
                restarted = known is not None and known != theirs.nonce
                if not restarted:
                    with contextlib.suppress(OSError):
                        _send(conn, self.mine.to_bytes())
            if restarted:
                self.on_peer_restart(
                    f"engine: member {theirs.process_id} "
                    f"({self.spec.addresses[theirs.process_id]}) started again; a Bytewax "
                    "cluster cannot take a member back, so this member exits and the "
                    "cluster resumes from its recovery snapshots when all are back")
                continue
            with self._lock:
                self._asked.add((theirs.process_id, theirs.nonce))
                self._latest[theirs.process_id] = theirs
                self._changed.notify_all()
            if theirs.stopping:
                self.on_peer_stop(f"engine: member {theirs.process_id} is stopping; "
                                  "stopping with it")

    def exchange(self, timeout_s: float | None = None) -> list[MemberReport]:
        """Every member's report, ordered by id (waits for peers that are not up yet)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        reports = {self.spec.process_id: self.mine}
        for peer in range(self.spec.members):
            if peer != self.spec.process_id:
                reports[peer] = self._ask(peer, deadline)
        told = time.monotonic()
        while True:
            self._check_abort()
            with self._lock:
                restarted = [i for i, theirs in self._latest.items()
                             if theirs.nonce != reports[i].nonce]
                waiting = sorted(i for i, report in reports.items()
                                 if i != self.spec.process_id
                                 and (i, report.nonce) not in self._asked)
                if not restarted and not waiting:
                    self._nonces = {i: report.nonce for i, report in reports.items()}
                    return [reports[i] for i in sorted(reports)]
                if not restarted:
                    self._changed.wait(0.5)
            for peer in restarted:  # it started again since it answered: ask the new one
                reports[peer] = self._ask(peer, deadline)
            self._check_abort()
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise ClusterError(f"members {waiting} did not ask for this member's "
                                   "start-up check in time")
            if waiting and now - told >= 10:
                self.say("engine: waiting for member(s) "
                         f"{', '.join(f'{i} ({self.spec.addresses[i]})' for i in waiting)} "
                         "to finish the start-up check")
                told = now

    def _check_abort(self) -> None:
        with self._lock:
            impostor = self._impostors[0] if self._impostors else None
        if impostor is not None:
            self.close()
            raise ClusterError(f"another process at {impostor} was started with "
                               f"--process-id {self.spec.process_id}: each member needs "
                               "its own id")
        if self.stop.is_set():
            self.close()
            raise CheckStopped("stopped during the start-up check, before the cluster "
                               "started")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def tell_peers_to_stop(self) -> None:
        """Ask every peer to stop cleanly too (in the background: called from a signal
        handler; a peer that is gone already is skipped)."""
        stopping = replace(self.mine, stopping=True).to_bytes()

        def tell(peer: int) -> None:
            host, port = self.spec.check_address(peer)
            with contextlib.suppress(OSError, ValueError), \
                    socket.create_connection((host, port), timeout=5) as conn:
                conn.settimeout(10)
                _send(conn, stopping)
                _receive(conn)

        for peer in range(self.spec.members):
            if peer != self.spec.process_id:
                threading.Thread(target=tell, args=(peer,), daemon=True).start()

    def _ask(self, peer: int, deadline: float | None) -> MemberReport:
        host, port = self.spec.check_address(peer)
        address = self.spec.addresses[peer]
        started = told = time.monotonic()
        while True:
            self._check_abort()
            try:
                with socket.create_connection((host, port), timeout=5) as conn:
                    conn.settimeout(30)
                    _send(conn, self.mine.to_bytes())
                    theirs = MemberReport.from_bytes(_receive(conn))
            except OSError as exc:
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise ClusterError(f"member {peer} at {address} did not answer the "
                                       f"start-up check on port {port}: {exc}") from None
                if now - told >= 10:
                    self.say(f"engine: waiting for member {peer} at {address} (start-up "
                             f"check on port {port}: {exc.strerror or exc})")
                    told = now
                time.sleep(0.2 if now - started < 5 else 1.0)
                continue
            except (ValueError, KeyError, TypeError) as exc:
                raise ClusterError(f"{host}:{port} answered the start-up check with "
                                   f"something else ({exc}): is member {peer} an engine "
                                   "of this version?") from None
            if theirs.process_id != peer:
                raise ClusterError(f"{address} answered as member {theirs.process_id}, not "
                                   f"{peer}: each member's --process-id is its position "
                                   "in --addresses")
            return theirs


def _exit_for_restart(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_LOST)
