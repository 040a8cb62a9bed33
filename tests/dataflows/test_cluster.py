"""The members' start-up check: what makes a cluster refuse, and the exchange itself."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dataflows.cluster import (
    CONFLICT,
    CheckStopped,
    ClusterError,
    ClusterSpec,
    MemberReport,
    PartitionSummary,
    StartupCheck,
    cluster_problems,
    merged_runs,
    partitions_to_create,
)
from dataflows.state_dir import RecoveryDir

ADDRESSES = ("10.0.0.1:2101", "10.0.0.2:2101")
TOPICS = ("inventory.events", "inventory.dlq", "availability.positions", "availability.channels")


def report(process_id: int, parts: dict[int, PartitionSummary] | None = None,
           **changes: object) -> MemberReport:
    base = MemberReport(
        process_id=process_id, addresses=ADDRESSES, recovery_dir=f"/data/{process_id}",
        rules_fingerprint="rules-a", topics=TOPICS, events_partitions=6,
        partitions=parts or {}, partitions_wanted=2, runs={1: "rules-a"},
        version_floor=100 * process_id, nonce=f"n{process_id}")
    return replace(base, **changes)  # type: ignore[arg-type]


def held(*indexes: int, count: int = 2, execution: int = 3, epoch: int = 40
         ) -> dict[int, PartitionSummary]:
    return {index: PartitionSummary(count, execution, epoch) for index in indexes}


@pytest.mark.parametrize(("process_id", "addresses", "complaint"), [
    (0, "", "empty"),
    (0, "host-a", "not host:port"),
    (0, "host-a:http", "not host:port"),
    (0, "host-a:65535", "not host:port"),
    (0, "a:1;a:1", "more than once"),
    (2, "a:1;b:1", "not a member"),
    (0, "::1:2101", "in brackets"),
    (0, "a:2101;a:2102", "leave a gap of 2"),
    (-1, "a:1", "not a member"),
])
def test_bad_addresses_are_refused_saying_why(process_id: int, addresses: str, complaint: str
                                              ) -> None:
    with pytest.raises(ClusterError, match=complaint):
        ClusterSpec.parse(process_id, addresses)


def test_addresses_parse_and_the_check_listens_on_the_next_port() -> None:
    spec = ClusterSpec.parse(1, " engine-0.engine:2101 ; engine-1.engine:2101 ")
    assert spec.members == 2
    assert spec.check_address(0) == ("engine-0.engine", 2102)


def test_members_that_agree_start() -> None:
    assert cluster_problems([report(0, held(0)), report(1, held(1))]) == []


def test_a_shared_volume_shows_every_partition_to_every_member() -> None:
    assert cluster_problems([report(0, held(0, 1)), report(1, held(0, 1))]) == []


def test_a_new_member_without_partitions_may_join() -> None:
    addresses = (*ADDRESSES, "10.0.0.3:2101")
    reports = [report(0, held(0), addresses=addresses), report(1, held(1), addresses=addresses),
               report(2, addresses=addresses)]
    assert cluster_problems(reports) == []


@pytest.mark.parametrize(("theirs", "complaint"), [
    ({"rules_fingerprint": "rules-b"}, "loaded different rules"),
    ({"addresses": ("10.0.0.1:2101", "10.0.0.9:2101")}, "needs the same list"),
    ({"topics": ("other.events", *TOPICS[1:])}, "uses topics other.events"),
    ({"events_partitions": 12}, "sees 12 partitions"),
])
def test_members_that_differ_are_refused_naming_the_difference(theirs: dict[str, object],
                                                              complaint: str) -> None:
    problems = cluster_problems([report(0, held(0)), report(1, held(1), **theirs)])
    assert len(problems) == 1
    assert complaint in problems[0]
    assert "member 1 (10.0.0." in problems[0]


def test_bracketed_ipv6_addresses_parse() -> None:
    assert ClusterSpec.parse(0, "[::1]:2101;[::1]:2103").check_address(1) == ("::1", 2104)


def test_settings_that_change_the_numbers_must_agree() -> None:
    problems = cluster_problems([
        report(0, settings={"--dedupe-horizon-hours": "168"}),
        report(1, settings={"--dedupe-horizon-hours": "24"})])
    assert problems == ["member 1 (10.0.0.2:2101) runs with --dedupe-horizon-hours 24, "
                        "member 0 (10.0.0.1:2101) with 168"]


def test_a_members_own_recovery_problems_stop_the_whole_cluster() -> None:
    problems = cluster_problems([report(0), report(1, problems=("partition 1 twice",))])
    assert problems == ["member 1 (10.0.0.2:2101): partition 1 twice"]


def test_a_store_that_never_ran_is_completed_instead_of_refused() -> None:
    pristine = {0: PartitionSummary(2, 0, 0)}
    reports = [report(0, pristine), report(1)]
    assert cluster_problems(reports) == []
    assert partitions_to_create(reports, 1) == (2, [1])
    assert partitions_to_create(reports, 0) == (0, [])


def test_two_members_with_one_id_are_refused() -> None:
    problems = cluster_problems([report(0), report(0)])
    assert any("own --process-id" in problem for problem in problems)


def test_events_partitions_must_divide_among_the_members() -> None:
    problems = cluster_problems([report(0, events_partitions=3),
                                 report(1, events_partitions=3)])
    assert problems == [problems[0]]
    assert "not divisible by the 2 members" in problems[0]


def test_a_wiped_volume_is_named_instead_of_silently_starting_empty() -> None:
    problems = cluster_problems([report(0, held(0)), report(1)])
    assert len(problems) == 1
    assert "recovery partitions [1] of 2" in problems[0]
    assert "member 1 (10.0.0.2:2101) at /data/1" in problems[0]


def test_partitions_of_two_recovery_stores_are_refused() -> None:
    problems = cluster_problems([report(0, held(0, count=2)), report(1, held(1, count=3))])
    assert "different recovery stores" in problems[0]


def test_a_stale_second_file_of_a_partition_is_reported(tmp_path: Path) -> None:
    state_dir = RecoveryDir(tmp_path, 0)
    state_dir.check_writable()
    state_dir.create_partitions(2, [0, 1])
    (tmp_path / "part-1.sqlite3").rename(tmp_path / "part-1-old.sqlite3")
    state_dir.create_partitions(2, [1])
    partitions, problems = state_dir.scan_partitions()
    assert sorted(partitions) == [0, 1]
    assert problems and "partition 1 twice" in problems[0] and "part-1-old.sqlite3" in problems[0]


def test_diverging_copies_of_a_partition_are_refused() -> None:
    problems = cluster_problems([report(0, held(0, 1)), report(1, held(1, epoch=12))])
    assert problems == [problems[0]]
    assert "partition 1 has different copies" in problems[0]
    assert "epoch 12" in problems[0] and "epoch 40" in problems[0]


def test_a_fresh_cluster_spreads_its_partitions_over_the_members() -> None:
    reports = [report(0, partitions_wanted=5), report(1, partitions_wanted=5)]
    assert partitions_to_create(reports, 0) == (5, [0, 2, 4])
    assert partitions_to_create(reports, 1) == (5, [1, 3])
    assert partitions_to_create([report(0, held(0)), report(1)], 1) == (0, [])


def test_run_ledgers_merge_and_a_conflict_matches_no_rules() -> None:
    merged = merged_runs([report(0, runs={1: "a", 2: "b"}), report(1, runs={1: "a", 3: "c"}),
                          report(1, runs={2: "x"})])
    assert merged == {1: "a", 2: CONFLICT, 3: "c"}


def test_reports_survive_the_wire_and_other_bytes_are_refused() -> None:
    mine = report(1, held(0, 1), runs={4: "rules-a"})
    assert MemberReport.from_bytes(mine.to_bytes()) == mine
    with pytest.raises(ValueError):
        MemberReport.from_bytes(b'{"protocol": "something else"}')


def _free_pair() -> int:
    from dataflows.runner import free_port_pairs
    return free_port_pairs(1)[0]


def _local_spec(process_id: int, ports: list[int]) -> ClusterSpec:
    return ClusterSpec.parse(process_id, ";".join(f"127.0.0.1:{port}" for port in ports))


def test_members_exchange_reports_and_a_restarted_peer_is_noticed() -> None:
    ports = [_free_pair(), _free_pair()]
    restarts: list[str] = []
    got: dict[int, list[MemberReport]] = {}
    checks = [StartupCheck(_local_spec(i, ports), report(i, addresses=tuple(
        f"127.0.0.1:{port}" for port in ports)), say=lambda _: None,
        on_peer_restart=restarts.append) for i in (0, 1)]

    def run(index: int) -> None:
        got[index] = checks[index].exchange(timeout_s=20)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.process_id for r in got[0]] == [0, 1] == [r.process_id for r in got[1]]
    assert got[0] == got[1]

    with socket.create_connection(("127.0.0.1", ports[0] + 1)) as junk:
        junk.sendall(b"GET / HTTP/1.0\r\n\r\n")  # a stray client is ignored
    again = StartupCheck(_local_spec(1, [ports[0], _free_pair()]),
                         report(1, nonce="restarted"), say=lambda _: None)
    try:  # the running member does not answer a restarted peer: it leaves instead
        with pytest.raises(ClusterError, match="did not answer"):
            again._ask(0, time.monotonic() + 2)
    finally:
        again.close()
    for check in checks:
        check.close()
    assert restarts and "member 1" in restarts[0] and "started again" in restarts[0]


def test_a_peer_restarted_during_the_check_is_asked_again() -> None:
    ports = [_free_pair(), _free_pair()]
    addresses = tuple(f"127.0.0.1:{port}" for port in ports)
    first = StartupCheck(_local_spec(0, ports), report(0, addresses=addresses),
                         say=lambda _: None)
    gone = StartupCheck(_local_spec(1, ports), report(1, addresses=addresses, nonce="old"),
                        say=lambda _: None)
    got: dict[str, list[MemberReport]] = {}
    member0 = threading.Thread(target=lambda: got.update(zero=first.exchange(timeout_s=30)))
    member0.start()
    deadline = time.monotonic() + 10
    while not gone._asked and time.monotonic() < deadline:  # member 0 asked the old one
        time.sleep(0.02)
    gone.close()  # ... which dies before asking member 0; a new one starts
    back = StartupCheck(_local_spec(1, ports), report(1, addresses=addresses, nonce="new"),
                        say=lambda _: None)
    got["one"] = back.exchange(timeout_s=30)
    member0.join(30)
    first.close()
    back.close()
    assert [r.nonce for r in got["zero"]] == ["n0", "new"]
    assert [r.nonce for r in got["one"]] == ["n0", "new"]


def test_a_stop_during_the_check_ends_it_at_once() -> None:
    stop = threading.Event()
    check = StartupCheck(_local_spec(1, [_free_pair(), _free_pair()]), report(1),
                         say=lambda _: None, stop=stop)
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    with pytest.raises(CheckStopped):
        check.exchange()
    assert time.monotonic() - began < 5


def test_two_members_with_one_id_are_named() -> None:
    ports = [_free_pair(), _free_pair()]
    check = StartupCheck(_local_spec(1, ports), report(1), say=lambda _: None)
    impostor = StartupCheck(_local_spec(0, [ports[0] + 10, ports[1]]), report(1),
                            say=lambda _: None)
    try:
        with contextlib.suppress(ClusterError):
            impostor._ask(1, time.monotonic() + 1)  # claims id 1 to member 1
        with pytest.raises(ClusterError, match="was started with --process-id 1"):
            check.exchange(timeout_s=2)
    finally:
        check.close()
        impostor.close()


def test_an_absent_peer_is_named_after_the_timeout() -> None:
    ports = [_free_pair(), _free_pair()]
    check = StartupCheck(_local_spec(1, ports), report(1), say=lambda _: None)
    try:
        with pytest.raises(ClusterError, match=f"member 0 at 127.0.0.1:{ports[0]} did not"):
            check.exchange(timeout_s=1)
    finally:
        check.close()


def test_each_member_creates_its_share_and_reads_it_back(tmp_path: Path) -> None:
    first, second = RecoveryDir(tmp_path / "a", 0), RecoveryDir(tmp_path / "b", 1)
    for state_dir in (first, second):
        state_dir.check_writable()
    first.create_partitions(3, [0, 2])
    second.create_partitions(3, [1])
    assert sorted(first.partitions()) == [0, 2]
    assert second.partitions() == {1: PartitionSummary(count=3, execution=0, epoch=0,
                                                       file="part-1.sqlite3")}
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".new")]


def test_members_record_the_run_they_agreed_on(tmp_path: Path) -> None:
    state_dir = RecoveryDir(tmp_path, 1)
    state_dir.check_writable()
    run, history = state_dir.record_run("rules-b", 7, {3: "rules-a"})
    assert run == 7 and history == {3: "rules-a", 7: "rules-b"}
    assert state_dir.runs() == history
