"""The real dataflow in process: no broker, Bytewax's testing source and sink.

``build_flow`` is given a ``TestingSource`` of :class:`SourceRecord` items (payloads
encoded with the real :class:`Codec`, as the Kafka source would hand them on) and a
``TestingSink``; what the sink receives, (state key, the records of one call of its logic),
flattened to (state key, :class:`OutgoingRecord`) pairs, is decoded
the way a consumer of the topics would read it and compared with the in-process fold of
``test_recovery.py``. The same properties as the Kafka scenarios, in a second or two:

* a disordered, duplicated stream folds to the in-process tables, and refused records
  come out as dead letters;
* after an abort in the middle of an epoch and a resume from the recovery dir (events
  replayed, restored SKUs republishing), a consumer keeping the newest version per key
  ends with the fold, one (key, version) never carries two values, and versions grow;
* a rules change applied at resume with no new event republishes what it changes and
  deletes the removed channel's keys with tombstones; the same rules again publish
  nothing.

Each input record's Kafka timestamp is ``TIMESTAMP_BASE + its index in the stream``: an
output's ``origin_ms`` (the oldest input that caused it) thus tells which input a
resumed run started again from; -1 marks output no input caused (a republish at start).
"""

from __future__ import annotations

import random
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from availability.retail_day import Workload
from availability_contracts.codec import Codec
from availability_contracts.schemas import CHANNEL_SCHEMA, DEAD_LETTER_SCHEMA, POSITION_SCHEMA
from availability_domain.events import EventType, InventoryEvent
from availability_domain.reference import QUANTITIES
from availability_domain.reference import reference_tables as fold_in_process
from availability_domain.rules import Rules, parse_rules
from benchmarks.rules import render_rules
from dataflows.flow import build_flow
from dataflows.kafka_sink import KeyedRecords, OutgoingRecord
from dataflows.kafka_source import SourceRecord
from dataflows.settings import EngineSettings
from dataflows.sku_logic import RunContext
from dataflows.state_dir import RecoveryDir, VersionClock

RULES_TEXT = render_rules(3, 20)
"""DC1..DC3 and S001..S020: the location ids of ``Workload(dcs=3, stores=20)``."""
START_MS = time.time_ns() // 1_000_000 - 3 * 3_600_000
"""Event time of the workload: three hours ago, inside every horizon of the engine
clock (the Workload's fixed default would depend on the day the suite runs)."""
TIMESTAMP_BASE = 1_000_000_000_000
BATCH = 100
"""Records per TestingSource batch: several events of a SKU fold in one ``on_batch``."""

Tables = tuple[dict[str, tuple[int, ...]], dict[str, int]]
"""(position key -> QUANTITIES, channel key -> ats): the shape of ``fold_in_process``."""

KeyedRecord = tuple[str, OutgoingRecord]
"""One record the sink received, with its state key."""


def rules_a() -> Rules:
    return parse_rules(tomllib.loads(RULES_TEXT), "rules A (benchmarks.rules)")


def rules_b() -> Rules:
    """Rules A with the walmart channel removed and a cap on web."""
    data = tomllib.loads(RULES_TEXT)
    del data["channels"]["walmart"]
    data["channels"]["web"]["max_quantity"] = 5
    return parse_rules(data, "rules B")


def settings_for(recovery_dir: Path | None) -> EngineSettings:
    return EngineSettings(brokers="unused:9092", rules_path=Path("unused.toml"),
                          recovery_dir=recovery_dir, metrics_port=0)


def workload(seed: int, count: int = 3_000) -> list[InventoryEvent]:
    return list(Workload(skus=50, seed=seed, start_ms=START_MS).events(count))


def disordered(events: Sequence[InventoryEvent], seed: int, resent: int = 150
               ) -> list[InventoryEvent]:
    """The events shuffled, with ``resent`` of them sent a second time (on top of the
    Workload's own duplicates and late events)."""
    rng = random.Random(seed)
    stream = [*events, *rng.sample(list(events), resent)]
    rng.shuffle(stream)
    return stream


def source_records(codec: Codec, topic: str, payloads: Iterable[tuple[bytes, bytes]]
                   ) -> list[SourceRecord]:
    return [SourceRecord(topic, 0, offset, key, value, TIMESTAMP_BASE + offset)
            for offset, (key, value) in enumerate(payloads)]


def encoded(codec: Codec, topic: str, events: Iterable[InventoryEvent]
            ) -> list[tuple[bytes, bytes]]:
    return [(event.position_key.encode(), codec.encode_event(event, topic))
            for event in events]


def run_context(rules: Rules, recovery_dir: Path | None) -> RunContext:
    """As ``dataflows.runner.run_member`` builds it (the lock is left out: it is held
    per open file for the life of the process, so a second run here would refuse)."""
    fingerprint = rules.fingerprint()
    if recovery_dir is None:
        return RunContext(rules, fingerprint, next_version=VersionClock(None))
    state_dir = RecoveryDir(recovery_dir)
    run, history = state_dir.record_run(fingerprint)
    return RunContext(rules, fingerprint, run, history, state_dir.version_clock())


def run_flow(rules: Rules, items: Sequence[Any], recovery_dir: Path | None = None,
             epoch_interval: timedelta = timedelta(0), batch_size: int = BATCH
             ) -> list[KeyedRecord]:
    """One engine run over ``items`` in this process; what the sink received, in order.

    A new flow and a new TestingSource every time: a resumed run must not reuse the
    source of the aborted one (the TestingSource resumes from its snapshot index).
    """
    settings = settings_for(recovery_dir)
    out: list[KeyedRecords] = []
    flow = build_flow(settings, run_context(rules, recovery_dir),
                      source=TestingSource(items, batch_size=batch_size), sink=TestingSink(out))
    recovery = RecoveryConfig(str(recovery_dir)) if recovery_dir is not None else None
    run_main(flow, epoch_interval=epoch_interval, recovery_config=recovery)
    return [(key, record) for key, records in out for record in records]


def new_recovery_dir(path: Path) -> Path:
    path.mkdir()
    init_db_dir(path, 1)
    return path


class Published(NamedTuple):
    """One snapshot-topic record as a consumer sees it."""

    topic: str
    key: str
    version: int | None
    """None for a tombstone."""
    row: tuple[Any, ...] | None
    """The value without version and computed_at; None for a tombstone."""
    ats: int | None
    origin_ms: int


def published(records: Iterable[KeyedRecord], codec: Codec, topics: Any) -> list[Published]:
    """The sink's snapshot records decoded, in emission order (dead letters left out)."""
    out = []
    for _, record in records:
        if record.topic not in (topics.positions, topics.channels):
            continue
        assert isinstance(record.key, str), record
        if record.value is None:
            assert record.topic == topics.channels, f"a position tombstone: {record}"
            out.append(Published(record.topic, record.key, None, None, None, record.origin_ms))
            continue
        if record.topic == topics.positions:
            value = codec.decode(POSITION_SCHEMA, record.value)
            row: tuple[Any, ...] = tuple(value[q] for q in QUANTITIES)
        else:
            value = codec.decode(CHANNEL_SCHEMA, record.value)
            row = (value["ats"], value["as_of"],
                   tuple((c["location_id"], c["ats"], c["in_transit"])
                         for c in value["locations"]))
        assert value["computed_at"] > 0
        out.append(Published(record.topic, record.key, value["version"], row, value["ats"],
                             record.origin_ms))
    return out


def latest_per_key(records: Iterable[Published], topics: Any) -> Tables:
    """What a compacted topic ends with: the last record per key; a tombstone deletes."""
    positions: dict[str, tuple[int, ...]] = {}
    channels: dict[str, int] = {}
    for rec in records:
        if rec.topic == topics.positions:
            assert rec.row is not None
            positions[rec.key] = rec.row  # type: ignore[assignment]
        elif rec.ats is None:
            channels.pop(rec.key, None)
        else:
            channels[rec.key] = rec.ats
    return positions, channels


def newest_version_per_key(records: Iterable[Published], topics: Any) -> Tables:
    """What a consumer of docs/semantics.md ends with: per key the value of the highest
    version seen, a record whose version is not greater dropped, a tombstone deleting."""
    newest: dict[tuple[str, str], tuple[int, Published]] = {}
    for rec in records:
        slot = (rec.topic, rec.key)
        if rec.version is None:
            newest.pop(slot, None)
        elif slot not in newest or rec.version > newest[slot][0]:
            newest[slot] = (rec.version, rec)
    positions = {key: rec.row for (topic, key), (_, rec) in newest.items()
                 if topic == topics.positions}
    channels = {key: rec.ats for (topic, key), (_, rec) in newest.items()
                if topic == topics.channels}
    return positions, channels  # type: ignore[return-value]


def versions_grow_and_mean_one_value(records: Sequence[Published]) -> None:
    """Per key, versions strictly increase in emission order; one (key, version) is
    one value."""
    values: dict[tuple[str, str, int], tuple[Any, ...]] = {}
    last: dict[tuple[str, str], int] = {}
    conflicts, regressions = [], []
    for rec in records:
        if rec.version is None:
            continue
        slot = (rec.topic, rec.key)
        assert rec.row is not None
        seen = values.setdefault((rec.topic, rec.key, rec.version), rec.row)
        if seen != rec.row:
            conflicts.append((rec.key, rec.version, seen, rec.row))
        if slot in last and rec.version <= last[slot]:
            regressions.append((rec.key, last[slot], rec.version))
        last[slot] = rec.version
    assert not conflicts, f"{len(conflicts)} (key, version) with two values: {conflicts[:3]}"
    assert not regressions, f"{len(regressions)} versions not increasing: {regressions[:3]}"


# 1. a disordered, duplicated stream, and invalid records --------------------------------


class DisorderedRun(NamedTuple):
    events: list[InventoryEvent]
    stream: list[SourceRecord]
    invalid: dict[int, str]
    """Offset of each invalid record -> the reason_code it must be refused with."""
    output: list[KeyedRecord]


@pytest.fixture(scope="module")
def disordered_run() -> DisorderedRun:
    codec = Codec()
    topics = settings_for(None).topics
    events = workload(seed=21)
    payloads = encoded(codec, topics.events, disordered(events, seed=4))
    future = InventoryEvent("ev-future", EventType.RECEIPT, int(time.time() * 1000) + 86_400_000,
                            "erp", "SKU-000003", "DC1", 5)
    delimited = InventoryEvent("ev-delim", EventType.RECEIPT, START_MS, "erp", "SKU-000003",
                               "DC|1", 5)
    bad = {
        700: ((b"SKU-000001|DC1", b"\x00not avro at all"), "undecodable"),
        1400: ((b"SKU-000003|DC1", codec.encode_event(future, topics.events)), "future_event"),
        2100: ((b"SKU-000003|DC|1", codec.encode_event(delimited, topics.events)),
               "id_delimiter"),
        2800: ((b"SKU-000002|S001", b""), "undecodable"),
    }
    for offset in sorted(bad):
        payloads.insert(offset, bad[offset][0])
    stream = source_records(codec, topics.events, payloads)
    output = run_flow(rules_a(), stream)
    return DisorderedRun(events, stream, {offset: code for offset, (_, code) in bad.items()},
                         output)


def test_disordered_duplicated_stream_folds_to_the_in_process_tables(
        disordered_run: DisorderedRun, codec: Codec) -> None:
    topics = settings_for(None).topics
    records = published(disordered_run.output, codec, topics)
    expected = fold_in_process(disordered_run.events, rules_a())
    assert len(expected[0]) > 300 and len(expected[1]) > 300  # a real workload
    assert not [r for r in records if r.version is None], "a tombstone with unchanged rules"
    assert latest_per_key(records, topics) == expected
    assert newest_version_per_key(records, topics) == expected
    versions_grow_and_mean_one_value(records)


def test_invalid_records_come_out_as_dead_letters_with_their_reason_code(
        disordered_run: DisorderedRun, codec: Codec) -> None:
    topics = settings_for(None).topics
    dead = [(state_key, record) for state_key, record in disordered_run.output
            if record.topic == topics.dlq]
    assert all(state_key == "dead-letter" for state_key, _ in dead)
    letters = {}
    for _, record in dead:
        assert record.value is not None
        letter = codec.decode(DEAD_LETTER_SCHEMA, record.value)
        origin = disordered_run.stream[letter["source_offset"]]
        assert record.key == origin.key == letter["original_key"]
        assert letter["original_value"] == origin.value
        assert letter["source_topic"] == topics.events and letter["source_partition"] == 0
        assert letter["reason"] and not letter["truncated"]
        assert record.origin_ms == origin.timestamp_ms
        letters[letter["source_offset"]] = letter["reason_code"]
    assert letters == disordered_run.invalid


# 2. abort in the middle of an epoch, resume from the recovery dir -----------------------

EPOCH = timedelta(seconds=0.5)
EPOCH_CLOSED_AT = 1_000
"""A pause longer than an epoch after this many records: the resume snapshot."""
ABORT_AT = 1_700
"""The crash, well within the epoch after the pause: the records in between are folded
and published by run 1, then replayed (and folded in other batches) by run 2."""
REPLAY_BATCH = 1_000
"""Run 2's batch size (run 1: ``BATCH``): the replayed records fold in one batch where
run 1 folded them in several, so run 1 published intermediate numbers that run 2 never
reaches; only the republish of restored SKUs supersedes them (the test fails without it)."""


def test_abort_and_resume_leave_newest_versions_equal_to_the_fold(
        tmp_path: Path, codec: Codec) -> None:
    topics = settings_for(None).topics
    events = workload(seed=33)
    stream = source_records(codec, topics.events,
                            encoded(codec, topics.events, disordered(events, seed=8)))
    items: list[Any] = [*stream[:EPOCH_CLOSED_AT],
                        TestingSource.PAUSE(EPOCH * 1.2),
                        *stream[EPOCH_CLOSED_AT:ABORT_AT],
                        TestingSource.ABORT(),
                        *stream[ABORT_AT:]]
    recovery_dir = new_recovery_dir(tmp_path / "recovery")
    rules = rules_a()
    expected = fold_in_process(events, rules)

    first = published(run_flow(rules, items, recovery_dir, EPOCH), codec, topics)
    first_inputs = {r.origin_ms - TIMESTAMP_BASE for r in first}
    assert max(first_inputs) < ABORT_AT, "run 1 went past the abort"
    assert newest_version_per_key(first, topics) != expected, "the abort cut nothing"

    # the same items again: the triggered ABORT is skipped, the source resumes from the
    # index of the last snapshot, the clock from the lease run 1 left in the recovery dir;
    # larger batches, as a consumer catching up reads them, fold the replay differently
    second = published(run_flow(rules, items, recovery_dir, EPOCH, batch_size=REPLAY_BATCH),
                       codec, topics)
    second_inputs = [r.origin_ms - TIMESTAMP_BASE for r in second]
    resumed_from = min(second_inputs)
    assert 0 < resumed_from < ABORT_AT, (
        f"run 2 resumed from input {resumed_from}: expected a snapshot between the start "
        f"and the abort at {ABORT_AT}, so that published events are replayed")
    assert all(r.version is not None for r in first + second)

    both = first + second
    assert newest_version_per_key(both, topics) == expected
    versions_grow_and_mean_one_value(both)
    # the replay folds in other batches than run 1 did; a number run 1 published from
    # the replayed events is superseded by a newer version, even where unchanged
    replayed_keys = {(r.topic, r.key) for r in first if r.origin_ms - TIMESTAMP_BASE
                     >= resumed_from}
    republished = {(r.topic, r.key) for r in second}
    assert replayed_keys and replayed_keys <= republished
    assert latest_per_key(both, topics) == expected


# 3. a rules change at resume, with no new event ----------------------------------------


def test_rules_change_at_resume_republishes_changes_and_tombstones_removed_keys(
        tmp_path: Path, codec: Codec) -> None:
    topics = settings_for(None).topics
    events = workload(seed=45)
    stream = source_records(codec, topics.events,
                            encoded(codec, topics.events, disordered(events, seed=2)))
    items: list[Any] = [*stream, TestingSource.EOF()]
    recovery_dir = new_recovery_dir(tmp_path / "recovery")
    before, after = rules_a(), rules_b()
    expected_before = fold_in_process(events, before)
    expected_after = fold_in_process(events, after)
    removed = set(expected_before[1]) - set(expected_after[1])
    changed = {key for key, ats in expected_after[1].items()
               if expected_before[1].get(key) != ats}
    assert removed and all(key.startswith("walmart|") for key in removed)
    assert changed and all(key.startswith("web|") for key in changed)
    assert set(expected_after[1]) <= set(expected_before[1])

    first = published(run_flow(before, items, recovery_dir), codec, topics)
    assert latest_per_key(first, topics) == expected_before

    # the source resumes past its EOF: nothing is read, whatever comes out is the change
    second = published(run_flow(after, items, recovery_dir), codec, topics)
    assert all(r.origin_ms == -1 for r in second), "run 2 replayed input"
    kinds = Counter(("tombstone" if r.version is None else r.topic) for r in second)
    assert kinds == {"tombstone": len(removed), topics.channels: len(changed)}, (
        "positions and numbers the change does not affect must not be republished")
    assert {r.key for r in second if r.version is None} == removed
    capped = {r.key: r.ats for r in second if r.version is not None}
    assert capped == {key: expected_after[1][key] for key in changed}
    assert all(ats is not None and 0 <= ats <= 5 for ats in capped.values())

    both = first + second
    assert latest_per_key(both, topics) == expected_after
    assert newest_version_per_key(both, topics) == expected_after
    versions_grow_and_mean_one_value(both)

    # the same rules again: a plain restart publishes nothing by itself
    assert run_flow(after, items, recovery_dir) == []
