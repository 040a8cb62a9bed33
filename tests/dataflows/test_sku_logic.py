"""What a restored SKU republishes, decided from the run ledger; its snapshot format."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from availability_domain.events import EventType, InventoryEvent, parse_event
from availability_domain.inventory import SkuInventory
from availability_domain.rules import Rules
from availability_domain.snapshots import ChannelSnapshot, PositionSnapshot
from dataflows.kafka_sink import OutgoingRecord
from dataflows.kafka_source import SourceRecord
from dataflows.sku_events import SkuEvents
from dataflows.sku_logic import (
    SNAPSHOT_MAGIC,
    UNCHECKED_MAGIC,
    UNCOMPRESSED_MAGIC,
    DamagedSnapshot,
    RunContext,
    SkuAvailabilityLogic,
    SkuState,
    StoredState,
    republish_mode,
)
from dataflows.snapshot_output import SnapshotOutput
from tests.availability_domain.test_properties import EARLIEST_NOW, RULES, T0, event_sets
from tests.availability_domain.test_properties import NOW as RUN_END

A, B, C = "rules-a", "rules-b", "rules-c"


def context(run: int, fingerprint: str, history: dict[int, str]) -> RunContext:
    return RunContext(Rules(), fingerprint, run, history)


@pytest.mark.parametrize(("published_under", "snapshot_run", "now", "history", "mode"), [
    (A, 1, A, {1: A, 2: A}, "none"),            # plain restart
    (A, 1, B, {1: A, 2: B}, "changes"),         # rules changed at this start
    (A, 1, B, {1: A, 2: B, 3: B}, "changes"),   # a crashed run already had today's rules
    (A, 1, A, {1: A, 2: B, 3: A}, "everything"),  # B was published, then the state lost it
    (A, 1, C, {1: A, 2: B, 3: C}, "everything"),
    (None, 0, A, {1: A}, "everything"),         # state written by 0.1: rules unknown
    (B, 3, A, {1: A, 2: C, 3: B, 4: A}, "changes"),  # C predates the snapshot
])
def test_republish_mode(published_under: str | None, snapshot_run: int, now: str,
                        history: dict[int, str], mode: str) -> None:
    assert republish_mode(published_under, snapshot_run,
                          context(max(history), now, history)) == mode


# -- recovery snapshots: restored SKUs are unpickled only when an event or timer needs them

def _logic(state: object, run: int = 2, earlier_clock_ms: int = 0) -> SkuAvailabilityLogic:
    def encode(positions: list[PositionSnapshot], channels: list[object], deleted: list[str],
               origin_ms: int) -> list[OutgoingRecord]:
        return [OutgoingRecord("positions", snap.key,
                               repr(snap._replace(computed_at=0)).encode(), origin_ms)
                for snap in positions]

    def reject(origin: SourceRecord, reason: str, code: str) -> OutgoingRecord:
        return OutgoingRecord("dlq", None, reason.encode(), origin.timestamp_ms)

    return SkuAvailabilityLogic(
        state, SkuInventory,  # type: ignore[arg-type]
        RunContext(Rules(), A, run, {1: A, 2: A}, earlier_clock_ms=earlier_clock_ms),
        SnapshotOutput(encode), reject)  # type: ignore[arg-type]


def _event(n: int, kind: EventType, quantity: int, replayed: bool = True, at: int = 0,
           **fields: object) -> tuple[InventoryEvent, SourceRecord]:
    """Event ``n`` at location S(n % 3), dated NOW + n unless ``at`` says otherwise."""
    event = InventoryEvent(f"e{n}", kind, at or NOW + n, "wms", "SKU-1", f"S{n % 3}", quantity,
                           **fields)  # type: ignore[arg-type]
    return event, SourceRecord("events", 0, n, None, b"", NOW + n, replayed)


NOW = int(datetime.now(tz=UTC).timestamp() * 1000)
HOLD = NOW + 3_600_000


def _folded_logic() -> SkuAvailabilityLogic:
    logic = _logic(None, run=1)
    logic.on_batch([SkuEvents(_event(n, EventType.COUNT, 10 + n) for n in range(3)),
                    SkuEvents(_event(n, EventType.COUNT, 10 + n) for n in range(3, 6))])
    logic.on_batch([SkuEvents([_event(9, EventType.RESERVATION_CREATED, 2, reservation_id="r1",
                                      channel="web", expires_at=HOLD)])])
    return logic


def test_a_restored_sku_answers_its_timer_from_the_header_and_acts_like_an_eager_restore(
        ) -> None:
    snapshot = _folded_logic().snapshot()
    assert snapshot.startswith(SNAPSHOT_MAGIC)
    stored = StoredState.parse(snapshot)
    assert isinstance(stored, StoredState)
    assert (stored.published_under, stored.snapshot_run, stored.next_expiry) == (A, 1, HOLD)
    lazy = _logic(stored)
    eager = _logic(stored.load())
    assert lazy.notify_at() == eager.notify_at() == datetime.fromtimestamp(HOLD / 1000, tz=UTC)
    assert lazy.snapshot() == snapshot  # untouched since the restore: the same bytes
    more = [SkuEvents(_event(n, EventType.SALE, 1) for n in range(20, 26))]
    lazy_out, _ = lazy.on_batch(more)
    eager_out, _ = eager.on_batch(more)
    assert list(lazy_out) == list(eager_out) and list(lazy_out)
    assert lazy.notify_at() == eager.notify_at()
    assert lazy.snapshot() == eager.snapshot() != snapshot


def test_a_snapshot_written_before_the_header_format_still_restores() -> None:
    """0.1 and the releases before the header wrote the bare pickled SkuState."""
    logic = _folded_logic()
    state = logic._loaded()
    old_format = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    restored = StoredState.parse(old_format)
    assert isinstance(restored, SkuState)
    assert _logic(restored).notify_at() == datetime.fromtimestamp(HOLD / 1000, tz=UTC)
    assert StoredState.parse(pickle.dumps(None)) is None


def _unchecked(snapshot: bytes, magic: bytes = UNCHECKED_MAGIC) -> bytes:
    """A snapshot as a release before the checksums wrote it: the header without them."""
    assert snapshot.startswith(SNAPSHOT_MAGIC)
    fields_end = len(SNAPSHOT_MAGIC) + 18
    return magic + snapshot[len(SNAPSHOT_MAGIC):fields_end] + snapshot[fields_end + 8:]


def test_a_snapshot_from_before_the_compression_still_restores() -> None:
    """Header, then the bare pickle: what the releases before LZ4 wrote."""
    logic = _folded_logic()
    compressed = StoredState.parse(logic.snapshot())
    assert isinstance(compressed, StoredState) and compressed.compressed
    pickled = pickle.dumps(logic._loaded(), protocol=pickle.HIGHEST_PROTOCOL)
    unchecked = _unchecked(compressed.snapshot, UNCOMPRESSED_MAGIC)
    old = StoredState.parse(unchecked[:len(unchecked) - (len(compressed.snapshot)
                                                         - compressed.state_at)] + pickled)
    assert isinstance(old, StoredState) and not old.compressed
    assert old[:3] == compressed[:3]
    more = [SkuEvents(_event(n, EventType.SALE, 1) for n in range(20, 26))]
    from_old, from_new = _logic(old), _logic(compressed)
    assert list(from_old.on_batch(more)[0]) == list(from_new.on_batch(more)[0])
    assert from_old.snapshot() == from_new.snapshot()


def test_a_snapshot_from_before_the_checksums_still_restores() -> None:
    logic = _folded_logic()
    checked = StoredState.parse(logic.snapshot())
    assert isinstance(checked, StoredState) and checked.state_crc is not None
    old = StoredState.parse(_unchecked(checked.snapshot))
    assert isinstance(old, StoredState) and old.compressed and old.state_crc is None
    assert old[:3] == checked[:3]
    more = [SkuEvents(_event(n, EventType.SALE, 1) for n in range(20, 26))]
    from_old, from_new = _logic(old), _logic(checked)
    assert list(from_old.on_batch(more)[0]) == list(from_new.on_batch(more)[0])
    assert from_old.snapshot() == from_new.snapshot()
    assert from_new.snapshot().startswith(SNAPSHOT_MAGIC)


def test_a_compressed_snapshot_is_smaller_than_its_pickle() -> None:
    logic = _folded_logic()
    for n in range(200):
        logic.on_batch([SkuEvents([_event(100 + n, EventType.SALE, 1)])])
    stored = StoredState.parse(logic.snapshot())
    assert isinstance(stored, StoredState)
    pickled = pickle.dumps(stored.load(), protocol=pickle.HIGHEST_PROTOCOL)
    assert len(stored.snapshot) - stored.state_at < len(pickled) / 2


@pytest.mark.parametrize("checked", [True, False], ids=["checked", "before the checksums"])
@pytest.mark.parametrize("damage", ["cut", "wrong size"])
def test_a_damaged_compressed_snapshot_is_named_when_it_loads(damage: str, checked: bool
                                                              ) -> None:
    snapshot = _folded_logic().snapshot()
    stored = StoredState.parse(snapshot if checked else _unchecked(snapshot))
    assert isinstance(stored, StoredState)
    body = bytearray(stored.snapshot)
    if damage == "cut":
        del body[-20:]
    else:
        size = int.from_bytes(body[stored.state_at:stored.state_at + 4], "little")
        body[stored.state_at:stored.state_at + 4] = (size + 1024).to_bytes(4, "little")
    damaged = StoredState.parse(bytes(body))
    assert isinstance(damaged, StoredState)
    with pytest.raises(DamagedSnapshot, match="recovery snapshot of a SKU is damaged"):
        damaged.load()
    logic = _logic(damaged)
    with pytest.raises(DamagedSnapshot,
                       match=r"of SKU 'SKU-1' is damaged .*rebuild from the event log"):
        logic.on_batch([SkuEvents([_event(50, EventType.SALE, 1)])])


def _damaged_restore(snapshot: bytes, at: int, byte: int) -> object:
    """What a restart makes of ``snapshot`` with byte ``at`` set to ``byte``: the state,
    or the DamagedSnapshot raised while reading its header or its state."""
    body = bytearray(snapshot)
    body[at % len(body)] = byte
    try:
        stored = StoredState.parse(bytes(body))
        return stored.load() if isinstance(stored, StoredState) else stored
    except DamagedSnapshot as refused:
        return refused


@settings(max_examples=300, deadline=None)
@given(at=st.integers(len(SNAPSHOT_MAGIC), 10_000), byte=st.integers(0, 255))
@example(at=len(SNAPSHOT_MAGIC) + 17, byte=0xFE)   # the rules' length
@example(at=len(SNAPSHOT_MAGIC) + 27, byte=0xFF)   # inside the header's checksum
def test_a_changed_byte_anywhere_in_a_snapshot_is_refused_as_damaged(at: int, byte: int
                                                                     ) -> None:
    """A CRC-32 catches every change of one byte, in the header or the state."""
    snapshot = _folded_logic().snapshot()
    at = len(SNAPSHOT_MAGIC) + (at - len(SNAPSHOT_MAGIC)) % (len(snapshot) - len(SNAPSHOT_MAGIC))
    if snapshot[at] == byte:
        byte ^= 0x01
    outcome = _damaged_restore(snapshot, at, byte)
    assert isinstance(outcome, DamagedSnapshot), outcome


@settings(max_examples=200, deadline=None)
@given(at=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_a_damaged_byte_in_an_unchecked_snapshot_is_refused_or_reads_a_state(at: int,
                                                                              byte: int
                                                                              ) -> None:
    """Before the checksums: bytes changed after the header are refused as damaged,
    never another error; a change that still decompresses and unpickles reads as a
    state, which is what the checksums are for."""
    stored = StoredState.parse(_unchecked(_folded_logic().snapshot()))
    assert isinstance(stored, StoredState)
    at = stored.state_at + at % (len(stored.snapshot) - stored.state_at)
    outcome = _damaged_restore(stored.snapshot, at, byte)
    assert isinstance(outcome, DamagedSnapshot | SkuState), outcome


def test_a_damaged_snapshot_without_a_header_is_refused_as_damaged() -> None:
    """0.1's bare pickles have no header to check: damage that breaks the pickle is
    named like any other."""
    state = _folded_logic()._loaded()
    bare = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(DamagedSnapshot, match="recovery snapshot of a SKU is damaged"):
        StoredState.parse(bare[:len(bare) // 2])
    with pytest.raises(DamagedSnapshot, match="it holds a list"):
        StoredState.parse(pickle.dumps([1, 2]))


def _published_keys(out: object) -> set[str]:
    return {record.key for item in out for record in item  # type: ignore[attr-defined]
            if record.topic == "positions"}


def _versions(out: object) -> dict[str, int]:
    return {record.key: int(record.value.split(b"version=")[1].split(b",")[0])  # type: ignore[attr-defined]
            for item in out for record in item  # type: ignore[attr-defined]
            if record.topic == "positions"}


def test_replayed_events_republish_the_keys_they_name_even_when_they_change_nothing(
        ) -> None:
    """The crashed run may have applied and published an event this run drops as a
    duplicate (or rejects); the consumers must not keep that run's number, so the
    locations a possibly-read event names are published again under fresh versions."""
    logic = _folded_logic()
    restored = _logic(StoredState.parse(logic.snapshot()))
    replayed = [SkuEvents(_event(n, EventType.COUNT, 10 + n) for n in (0, 1, 3))]  # duplicates
    first = _versions(restored.on_batch(replayed)[0])
    assert set(first) == {"SKU-1|S0", "SKU-1|S1"}  # not S2: no replayed event names it
    again = _versions(restored.on_batch(replayed)[0])
    assert set(again) == set(first)
    assert all(again[key] > first[key] for key in first)


def test_events_no_earlier_run_read_publish_only_what_they_change() -> None:
    logic = _folded_logic()
    restored = _logic(StoredState.parse(logic.snapshot()))
    fresh = [SkuEvents([_event(0, EventType.COUNT, 10, replayed=False),  # a duplicate
                        _event(31, EventType.SALE, 1, replayed=False)])]
    out, _ = restored.on_batch(fresh)
    assert _published_keys(out) == {"SKU-1|S1"}


def test_a_reservation_due_before_the_restart_republishes_its_location(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The crashed run may have expired it and published the release. Here a new
    reservation of the same size (and no newer as_of) nets the location to what the
    snapshot recorded, so only the forced republish replaces the crashed run's number."""
    clock = [NOW]
    monkeypatch.setattr("dataflows.sku_logic.now_ms", lambda: clock[0])
    logic = _logic(None, run=1)
    logic.on_batch([SkuEvents([_event(0, EventType.COUNT, 10)])])
    logic.on_batch([SkuEvents([_event(3, EventType.RESERVATION_CREATED, 2, reservation_id="r1",
                                      channel="web", expires_at=NOW + 1_000)])])
    restored = _logic(StoredState.parse(logic.snapshot()))
    clock[0] = NOW + 5_000
    new_hold = [SkuEvents([_event(6, EventType.RESERVATION_CREATED, 2, replayed=False,
                                  at=NOW + 3, reservation_id="r2", channel="web",
                                  expires_at=HOLD)])]
    out, _ = restored.on_batch(new_hold)
    assert _published_keys(out) == {"SKU-1|S0"}
    assert list(restored.on_batch(new_hold)[0]) == []  # only the first call after the restore


def _reserved_until(clock: list[int], expires_at: int) -> SkuAvailabilityLogic:
    logic = _logic(None, run=1)
    logic.on_batch([SkuEvents([_event(0, EventType.COUNT, 10)])])
    logic.on_batch([SkuEvents([_event(3, EventType.RESERVATION_CREATED, 2, reservation_id="r1",
                                      channel="web", expires_at=expires_at)])])
    return logic


def test_a_reservation_due_by_an_earlier_run_s_clock_counts_when_the_clock_stepped_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [NOW]
    monkeypatch.setattr("dataflows.sku_logic.now_ms", lambda: clock[0])
    logic = _reserved_until(clock, NOW + 1_000)
    snapshot = logic.snapshot()
    sale = [SkuEvents([_event(31, EventType.SALE, 1, replayed=False)])]
    clock[0] = NOW + 500  # behind the crashed run, which was past NOW + 2,000
    stepped_back = _logic(StoredState.parse(snapshot), earlier_clock_ms=NOW + 2_000)
    assert _published_keys(stepped_back.on_batch(sale)[0]) == {"SKU-1|S0", "SKU-1|S1"}
    unaware = _logic(StoredState.parse(snapshot))
    assert _published_keys(unaware.on_batch(sale)[0]) == {"SKU-1|S1"}


def test_a_replayed_event_this_run_rejects_at_a_new_location_republishes_every_key() -> None:
    """The crashed run may have created that location and pooled it into channels;
    this run has no position there to publish again, so the whole SKU goes out."""
    restored = _logic(StoredState.parse(_folded_logic().snapshot()))
    too_old = InventoryEvent("old", EventType.COUNT, NOW - 8 * 86_400_000, "wms", "SKU-1",
                             "DC9", 5)
    out, _ = restored.on_batch([SkuEvents([(too_old, SourceRecord("events", 1, 7, None, b"",
                                                                  NOW))])])
    assert _published_keys(out) == {f"SKU-1|S{n}" for n in range(3)}


# -- kill -9 at any moment: what a consumer keeping the newest version ends with -------

@st.composite
def _crash_runs(draw: st.DrawFn) -> tuple[list[list[InventoryEvent]], list[int], list[int],
                                          list[int], int]:
    """Two partitions' logs; how far the crashed run read each, where its last snapshot
    was, how much was in each log when the next run started; the crash moment's clock."""
    events = draw(event_sets())
    partition_of = draw(st.lists(st.integers(0, 1), min_size=len(events),
                                 max_size=len(events)))
    logs: list[list[InventoryEvent]] = [[], []]
    for event, partition in zip(events, partition_of, strict=True):
        logs[partition].append(event)
    read = [draw(st.integers(0, len(log))) for log in logs]
    snapshot = [draw(st.integers(0, n)) for n in read]
    at_restart = [draw(st.integers(n, len(log))) for n, log in zip(read, logs, strict=True)]
    crash_clock = draw(st.integers(EARLIEST_NOW, RUN_END))
    return logs, read, snapshot, at_restart, crash_clock


class _Consumer:
    """Keeps the newest version per key, as the replica and the marketplaces do."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.values_of: dict[tuple[str, int], tuple[int, ...]] = {}

    def take(self, key: str, version: int, value: tuple[int, ...]) -> None:
        assert self.values_of.setdefault((key, version), value) == value, (key, version)
        if version > self.table.get(key, (0, ()))[0]:
            self.table[key] = (version, value)


def _run(logs: list[list[InventoryEvent]], start: list[int], stop: list[int],
         restored: dict[str, bytes], replay_end: list[int], clock: list[int], until: int,
         consumer: _Consumer, versions: Iterator[int], earlier_clock_ms: int,
         interleave: list[int], snapshot_at: list[int] | None = None,
         ) -> tuple[dict[str, SkuAvailabilityLogic], dict[str, bytes]]:
    """One engine run over the logs from ``start`` to ``stop``, batch by batch; returns
    its SKUs' logic and the snapshots taken when its reads reached ``snapshot_at``."""
    def encode(positions: list[PositionSnapshot], channels: list[ChannelSnapshot],
               deleted: list[str], origin_ms: int) -> list[OutgoingRecord]:
        for p in positions:
            consumer.take(p.key, p.version, (p.on_hand, p.unsellable, p.reserved,
                                             p.in_transit, p.safety_stock, p.ats, p.as_of))
        for c in channels:
            consumer.take(c.key, c.version, (c.ats, c.as_of))
        assert not deleted
        return []

    def reject(origin: SourceRecord, reason: str, code: str) -> OutgoingRecord:
        return OutgoingRecord("dlq", None, b"", -1)

    context = RunContext(RULES, "rules", 2, {1: "rules", 2: "rules"},
                         lambda previous: next(versions), earlier_clock_ms)
    logics = {sku: SkuAvailabilityLogic(StoredState.parse(snapshot), SkuInventory, context,
                                        SnapshotOutput(encode), reject)
              for sku, snapshot in restored.items()}
    position, snapshots = list(start), {}
    steps = iter(interleave)
    begin = clock[0]
    total = sum(stop) - sum(start) or 1
    while position != stop:
        if snapshot_at is not None and position == snapshot_at and not snapshots:
            snapshots = {sku: logic.snapshot() for sku, logic in logics.items()}
        partition = next(steps, 0) % 2
        if position[partition] == stop[partition]:
            partition = 1 - partition
        take = min(next(steps, 1) % 4 + 1, stop[partition] - position[partition])
        if snapshot_at is not None and not snapshots:
            take = min(take, max(1, snapshot_at[partition] - position[partition]))
        batch = logs[partition][position[partition]:position[partition] + take]
        first = position[partition]
        position[partition] += take
        clock[0] = begin + (until - begin) * (sum(position) - sum(start)) // total
        by_sku: dict[str, SkuEvents] = {}
        for offset, event in enumerate(batch, first):
            by_sku.setdefault(event.sku, SkuEvents()).append(
                (event, SourceRecord("events", partition, offset, None, b"", 0,
                                     offset < replay_end[partition])))
        for sku, group in by_sku.items():
            logic = logics.get(sku)
            if logic is None:
                logic = logics[sku] = SkuAvailabilityLogic(None, SkuInventory, context,
                                                           SnapshotOutput(encode), reject)
            logic.on_batch([group])
        for logic in logics.values():
            due = logic.notify_at()
            if due is not None and due.timestamp() * 1000 <= clock[0]:
                logic.on_notify()
    if snapshot_at is not None and not snapshots:
        snapshots = {sku: logic.snapshot() for sku, logic in logics.items()}
    return logics, snapshots


def _prop_event(event_id: str, kind: str, minute: int, quantity: int, **fields: object
                ) -> InventoryEvent:
    return parse_event({"event_id": event_id, "event_type": kind, "source": "prop",
                        "sku": "A", "location_id": "DC1", "occurred_at": T0 + minute * 60_000,
                        "quantity": quantity} | fields)


_NETS_TO_NOTHING = (
    [[_prop_event("c", "COUNT", 9, 10),
      _prop_event("r", "RESERVATION_CREATED", 1, 2, reservation_id="r1", channel="web"),
      _prop_event("x", "RESERVATION_RELEASED", 2, 0, reservation_id="r1")], []],
    [2, 0], [1, 0], [3, 0], EARLIEST_NOW)
"""The crashed run publishes the hold after its snapshot; the replay folds the hold and
its release in one batch, which changes nothing against the snapshot."""


_EXPIRED_IN_THE_CRASHED_RUN = (
    [[_prop_event("c", "COUNT", 9, 10),
      _prop_event("r", "RESERVATION_CREATED", 1, 2, reservation_id="r1", channel="web",
                  expires_at=EARLIEST_NOW + 8_000)],
     [_prop_event("s", "SALE", 3, 1, sku="B"),
      _prop_event("n", "RESERVATION_CREATED", 2, 2, reservation_id="r2", channel="web")]],
    [2, 1], [2, 0], [2, 1], EARLIEST_NOW + 9_000)
"""The crashed run's timer expires the hold after the snapshot; the restarted run's
first call for the SKU brings a new hold of the same size, no newer, and nets to the
snapshot's number."""


@settings(max_examples=300, deadline=None)
@example(runs=_EXPIRED_IN_THE_CRASHED_RUN, interleave=[0, 1, 1, 0], replay_interleave=[1, 1],
         clock_back=False)
@example(runs=_NETS_TO_NOTHING, interleave=[0, 0, 0, 0], replay_interleave=[0, 1],
         clock_back=False)
@given(runs=_crash_runs(), interleave=st.lists(st.integers(0, 5), max_size=60),
       replay_interleave=st.lists(st.integers(0, 5), max_size=60),
       clock_back=st.booleans())
def test_a_consumer_keeping_the_newest_version_ends_with_the_engine_s_numbers_after_kill_9(
        runs: tuple[Any, ...], interleave: list[int], replay_interleave: list[int],
        clock_back: bool) -> None:
    """A run reads part of two partitions (publishing, firing timers) and is killed; the
    next restores its last snapshot and replays from the snapshot's offsets, batched and
    interleaved differently, possibly with its clock behind the crashed run's."""
    logs, read, snapshot_at, at_restart, crash_clock = runs
    clock = [EARLIEST_NOW]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("dataflows.sku_logic.now_ms", lambda: clock[0])
        _crash_and_replay(logs, read, snapshot_at, at_restart, crash_clock, clock,
                          interleave, replay_interleave, clock_back)


def _crash_and_replay(logs: list[list[InventoryEvent]], read: list[int], snapshot_at: list[int],
                      at_restart: list[int], crash_clock: int, clock: list[int],
                      interleave: list[int], replay_interleave: list[int], clock_back: bool
                      ) -> None:
    consumer, versions = _Consumer(), itertools.count(1)
    _, snapshots = _run(logs, [0, 0], read, {}, [0, 0], clock, crash_clock, consumer,
                        versions, 0, interleave, snapshot_at)
    if clock_back:
        clock[0] = EARLIEST_NOW
    ends = [len(log) for log in logs]
    logics, _ = _run(logs, snapshot_at, ends, snapshots, at_restart, clock, RUN_END, consumer,
                     versions, crash_clock, replay_interleave)
    clock[0] = RUN_END
    for logic in logics.values():
        logic.on_notify()
    engine: dict[str, tuple[int, ...]] = {}
    for sku, logic in logics.items():
        state = logic._loaded()
        if state is None:
            continue
        for location_id, (quantities, _version) in state.publisher.positions.items():
            engine[f"{sku}|{location_id}"] = tuple(quantities)
        for (name, location_id), (value, _version) in state.publisher.channels.items():
            key = f"{name}|{sku}" if location_id is None else f"{name}|{sku}|{location_id}"
            engine[key] = tuple(value)
    assert {key: value for key, (_, value) in consumer.table.items()} == engine
