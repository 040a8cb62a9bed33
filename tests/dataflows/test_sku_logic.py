"""What a restored SKU republishes, decided from the run ledger; its snapshot format."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from availability_domain.events import EventType, InventoryEvent
from availability_domain.inventory import SkuInventory
from availability_domain.rules import Rules
from availability_domain.snapshots import PositionSnapshot
from dataflows.kafka_sink import OutgoingRecord
from dataflows.kafka_source import SourceRecord
from dataflows.sku_events import SkuEvents
from dataflows.sku_logic import (
    SNAPSHOT_MAGIC,
    RunContext,
    SkuAvailabilityLogic,
    SkuState,
    StoredState,
    republish_mode,
)

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

def _logic(state: object, run: int = 2) -> SkuAvailabilityLogic:
    def encode(positions: list[PositionSnapshot], channels: list[object], deleted: list[str],
               origin_ms: int) -> list[OutgoingRecord]:
        return [OutgoingRecord("positions", snap.key,
                               repr(snap._replace(computed_at=0)).encode(), origin_ms)
                for snap in positions]

    def reject(origin: SourceRecord, reason: str, code: str) -> OutgoingRecord:
        return OutgoingRecord("dlq", None, reason.encode(), origin.timestamp_ms)

    return SkuAvailabilityLogic(
        state, SkuInventory,  # type: ignore[arg-type]
        RunContext(Rules(), A, run, {1: A, 2: A}), encode, reject)  # type: ignore[arg-type]


def _event(n: int, kind: EventType, quantity: int, **fields: object) -> tuple[InventoryEvent,
                                                                               SourceRecord]:
    event = InventoryEvent(f"e{n}", kind, NOW + n, "wms", "SKU-1", f"S{n % 3}", quantity,
                           **fields)  # type: ignore[arg-type]
    return event, SourceRecord("events", 0, n, None, b"", NOW + n)


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
    assert list(lazy_out) == list(eager_out) and list(lazy_out)  # everything republished
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


def _published_keys(out: object) -> set[str]:
    return {record.key for item in out for record in item  # type: ignore[attr-defined]
            if record.topic == "positions"}


def test_a_restored_sku_republishes_everything_even_when_its_replayed_batch_changes_nothing(
        ) -> None:
    """The crashed run may have applied and published an event this run rejects or drops
    as a duplicate; the consumers must not keep that run's number."""
    logic = _folded_logic()
    every_key = {f"SKU-1|S{n}" for n in range(3)}
    restored = _logic(StoredState.parse(logic.snapshot()))
    replayed = [SkuEvents(_event(n, EventType.COUNT, 10 + n) for n in range(6))]  # duplicates
    out, _ = restored.on_batch(replayed)
    assert _published_keys(out) == every_key
    again, _ = restored.on_batch(replayed)  # confirmed now: a duplicate publishes nothing
    assert list(again) == []
