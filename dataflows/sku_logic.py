"""The Bytewax state of one SKU: folds its events, emits changed snapshots.

Thin adapter between Bytewax's stateful operator and the pure domain
(:class:`SkuInventory` and :class:`SnapshotPublisher`); every business rule lives in
``availability_domain``. State is keyed by SKU so a transfer's origin and destination
and every channel pooling over the SKU's locations sit in one place.
"""

from __future__ import annotations

import pickle
import struct
import time
import zlib
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import lz4.block
from bytewax.operators import StatefulBatchLogic

from availability_domain.inventory import SkuInventory
from availability_domain.rules import Rules
from availability_domain.snapshots import NextVersion, count_versions
from dataflows.kafka_sink import OutgoingRecord
from dataflows.kafka_source import SourceRecord
from dataflows.metrics import count_events
from dataflows.sku_events import SkuEvents
from dataflows.snapshot_output import Publisher, SnapshotOutput

InventoryFactory = Callable[[str], SkuInventory]
Rejector = Callable[[SourceRecord, str, str], OutgoingRecord]
"""(origin, reason, reason code) -> dead letter."""
RepublishMode = Literal["none", "changes", "everything"]


@dataclass(frozen=True)
class RunContext:
    """What every SKU's logic of one engine run shares."""

    rules: Rules
    rules_fingerprint: str = ""
    run: int = 0
    """This start's number in the recovery dir's run ledger (0: no ledger)."""
    history: Mapping[int, str] = field(default_factory=dict)
    """Run number -> fingerprint of the rules that run started with."""
    next_version: NextVersion = count_versions
    earlier_clock_ms: int = 0
    """No earlier run's clock can have read later than this (the version floor): what a
    crashed run may have expired is judged against it too, in case the clock stepped
    back across the restart."""


def republish_mode(published_under: str | None, snapshot_run: int, context: RunContext
                   ) -> RepublishMode:
    """What a SKU restored from a recovery snapshot must republish at start.

    Its publisher records what it published up to the snapshot, under the rules
    ``published_under``. Any run started since may have published more before
    crashing. If each such run had either those rules or today's, what consumers hold
    differs from the record only where today's rules give another number: publish those
    ("changes"; "none" when the rules did not change). If a run in between had other
    rules, consumers may hold numbers nobody recorded: publish every key anew.
    """
    if published_under is None:
        return "everything"
    allowed = {published_under, context.rules_fingerprint}
    for run, fingerprint in context.history.items():
        if snapshot_run <= run < context.run and fingerprint not in allowed:
            return "everything"
    return "none" if published_under == context.rules_fingerprint else "changes"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SkuState:
    """Picklable per-SKU state: the positions, what was last published for them, under
    which rules, and which run took the snapshot."""

    __slots__ = ("inventory", "published_under", "publisher", "snapshot_run")

    def __init__(self, inventory: SkuInventory, publisher: Publisher,
                 published_under: str | None = None, snapshot_run: int = 0) -> None:
        self.inventory = inventory
        self.publisher = publisher
        self.published_under = published_under
        """Fingerprint of the rules the publisher's record reflects (None: unknown)."""
        self.snapshot_run = snapshot_run

    def __getstate__(self) -> tuple[SkuInventory, Publisher, str | None, int]:
        return self.inventory, self.publisher, self.published_under, self.snapshot_run

    def __setstate__(self, state: tuple[object, ...]) -> None:
        if len(state) == 2:  # written by 0.1: rules unknown
            state = (*state, None, 0)
        self.inventory, self.publisher, self.published_under, self.snapshot_run = state  # type: ignore[assignment]


SNAPSHOT_MAGIC = b"SKU\x04"
"""Starts every recovery snapshot of this format: the header with two CRC-32s (of the
header and of the state), then the state LZ4-compressed."""
UNCHECKED_MAGIC = b"SKU\x03"
"""Snapshots from before the checksums: the same header without them, then the state
LZ4-compressed."""
UNCOMPRESSED_MAGIC = b"SKU\x02"
"""Snapshots from before the compression: the unchecked header, then the bare pickle.
One written by 0.1 is a bare pickle without a header."""
_HEADER = struct.Struct(">qqH")
"""Next expiry (-1: none), the run that took the snapshot, the rules' length."""
_CHECKSUMS = struct.Struct(">II")
"""CRC-32 of the state's bytes, then of the header (magic, fields, state CRC, rules)."""
_UNKNOWN_RULES = 0xFFFF


def dump_state(state: SkuState) -> bytes:
    """A SKU's recovery snapshot: a small header, then the pickled state.

    The header holds what a restored SKU needs before its next event (its next expiry,
    which run took the snapshot, under which rules it published), so a restart does not
    unpickle the SKUs no event touches: Bytewax builds every restored key's logic and
    asks it :meth:`~SkuAvailabilityLogic.notify_at` at once, and unpickling a million
    positions took most of a restart.

    The pickle is LZ4-compressed: event ids and the pickles of positions repeat a lot
    (2.4x smaller on the benchmark workload), and every byte of a snapshot costs twice
    in Bytewax's SQLite store (written at the epoch's end, then freed page by page when
    the next snapshot of the key replaces it), more than compressing it costs.

    Two CRC-32s, one over the header and one over the state, let a restart tell a
    damaged snapshot from a state: damage that still decompresses and unpickles would
    otherwise restore wrong numbers without a word. The header has its own so that a
    restart, which reads only headers, checks what it reads without the state's bytes.
    """
    expiry = state.inventory.next_expiry()
    rules = b"" if state.published_under is None else state.published_under.encode()
    header = _HEADER.pack(-1 if expiry is None else expiry, state.snapshot_run,
                          _UNKNOWN_RULES if state.published_under is None else len(rules))
    body = lz4.block.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    checked = b"".join((SNAPSHOT_MAGIC, header, zlib.crc32(body).to_bytes(4, "big")))
    return b"".join((checked, _header_crc(checked, rules).to_bytes(4, "big"), rules, body))


def _header_crc(checked: bytes | memoryview, rules: bytes | memoryview) -> int:
    """The header's CRC-32: of every byte before it (magic, fields, the state's CRC), then
    of the rules after it."""
    return zlib.crc32(rules, zlib.crc32(checked))


class StoredState(NamedTuple):
    """A restored snapshot's header, its state still pickled (see :func:`dump_state`)."""

    published_under: str | None
    snapshot_run: int
    next_expiry: int | None
    snapshot: bytes
    state_at: int
    """Offset of the pickled state in ``snapshot``."""
    compressed: bool = True
    state_crc: int | None = None
    """CRC-32 of the state's bytes (None: a snapshot from before the checksums)."""

    @classmethod
    def parse(cls, snapshot: bytes) -> StoredState | SkuState | None:
        """The header of a snapshot with one; one without is unpickled at once.

        :class:`DamagedSnapshot` when the header cannot be read back."""
        magic = snapshot[:len(SNAPSHOT_MAGIC)]
        if magic not in (SNAPSHOT_MAGIC, UNCHECKED_MAGIC, UNCOMPRESSED_MAGIC):
            try:
                state: object = pickle.loads(snapshot)
            except Exception as error:  # damage can make the pickle fail in any way
                raise DamagedSnapshot(None, f"{type(error).__name__}: {error}") from error
            if state is not None and not isinstance(state, SkuState):
                raise DamagedSnapshot(None, f"it holds a {type(state).__name__}")
            return state
        view = memoryview(snapshot)
        at = len(magic)
        try:
            expiry, run, length = _HEADER.unpack_from(view, at)
            at += _HEADER.size
            state_crc = None
            if magic == SNAPSHOT_MAGIC:
                state_crc, header_crc = _CHECKSUMS.unpack_from(view, at)
                checked = view[:at + 4]  # up to the header's own CRC
                at += _CHECKSUMS.size
                rules_length = 0 if length == _UNKNOWN_RULES else length
                if header_crc != _header_crc(checked, view[at:at + rules_length]):
                    raise DamagedSnapshot(None, "its header does not match its checksum")
            rules = None
            if length != _UNKNOWN_RULES:
                if at + length > len(snapshot):
                    raise DamagedSnapshot(None, "it is shorter than its header says")
                rules = bytes(view[at:at + length]).decode()
                at += length
        except (struct.error, UnicodeDecodeError) as error:
            raise DamagedSnapshot(None, f"its header is unreadable: {error}") from error
        return cls(rules, run, None if expiry < 0 else expiry, snapshot, at,
                   magic != UNCOMPRESSED_MAGIC, state_crc)

    def load(self, loads: Callable[[bytes | memoryview], object] = pickle.loads,
             sku: str | None = None) -> SkuState:
        """The state; :class:`DamagedSnapshot` when it cannot be read back.

        ``sku``, when the caller knows it (a restored SKU's timer does not), goes into
        the error."""
        pickled: bytes | memoryview = memoryview(self.snapshot)[self.state_at:]
        if self.state_crc is not None and zlib.crc32(pickled) != self.state_crc:
            raise DamagedSnapshot(sku, "its state does not match its checksum")
        try:
            if self.compressed:
                pickled = lz4.block.decompress(pickled)
            state = loads(pickled)
        except Exception as error:  # damage can make the pickle fail in any way
            raise DamagedSnapshot(sku, f"{type(error).__name__}: {error}") from error
        if not isinstance(state, SkuState):
            raise DamagedSnapshot(sku, f"it holds a {type(state).__name__}")
        return state


class DamagedSnapshot(ValueError):
    """A SKU's recovery snapshot that cannot be read back. The engine stops rather than
    start that SKU over from nothing, which would publish wrong numbers for it."""

    def __init__(self, sku: str | None, reason: str) -> None:
        which = f"SKU {sku!r}" if sku is not None else "a SKU"
        super().__init__(
            f"the recovery snapshot of {which} is damaged ({reason}); the engine cannot "
            "restore it. Restore the recovery directory from a copy, or rebuild from the "
            "event log (docs/operations.md, \"Rebuild from the event log\")")


def _one_item(records: list[OutgoingRecord]) -> list[list[OutgoingRecord]]:
    """A call's records leave the fold as one item (see ``kafka_sink.KeyedRecords``)."""
    return [records] if records else []


class SkuAvailabilityLogic(StatefulBatchLogic[SkuEvents, list[OutgoingRecord], bytes]):
    """One SKU's fold and publishing.

    A SKU restored from a recovery snapshot may have been published further by the run
    that crashed, from events after the snapshot (now replayed) and from reservations
    that expired before this run started. Consumers hold those numbers under versions
    the snapshot does not know of, so this run publishes each such key again under a
    fresh version, even where its value here did not change (a replayed event that is a
    duplicate or too late in this run, say):

    * the locations an event changes (its location, a shipped transfer's destination)
      when the crashed run may have read it (:attr:`SourceRecord.replayed`), and their
      channels;
    * at the SKU's first batch or timer, every location with a reservation due by then
      (by the later of now and :attr:`RunContext.earlier_clock_ms`);
    * every key, when a replayed event names a location this run has no position for.

    No other key can have been published since the snapshot, so the rest of the SKU
    publishes only what changes. A rules change is republished at once (``_pending``),
    through :meth:`notify_at`, without waiting for an event.
    """

    def __init__(self, state: SkuState | StoredState | None, new_inventory: InventoryFactory,
                 context: RunContext, output: SnapshotOutput, reject: Rejector) -> None:
        self.output = output
        self._stored = state if isinstance(state, StoredState) else None
        """A restored snapshot not unpickled yet: it is on the first event or timer."""
        self._state = self._adopted(state) if isinstance(state, SkuState) else None
        self.new_inventory = new_inventory
        self.context = context
        self.rules = context.rules
        self.reject = reject
        self._restored = state is not None
        self._check_due = self._restored
        """Whether the first call after a restore is still to come."""
        self._pending: RepublishMode = "none"
        if state is not None:
            self._pending = republish_mode(state.published_under, state.snapshot_run, context)

    def _loaded(self, sku: str | None = None) -> SkuState | None:
        if self._stored is not None:
            self._state = self._adopted(self._stored.load(self.output.loads, sku))
            self._stored = None
        return self._state

    def _adopted(self, state: SkuState) -> SkuState:
        """A restored state, its publisher in the output's implementation."""
        state.publisher = self.output.adopt(state.publisher)
        return state

    def on_batch(self, values: list[SkuEvents]
                 ) -> tuple[Iterable[list[OutgoingRecord]], bool]:
        """``values``: the SKU's events of one or more source batches."""
        first_event, first_origin = values[0][0]
        if self._loaded(first_event.sku) is None:
            self._state = SkuState(self.new_inventory(first_event.sku),
                                   self.output.new_publisher(), self.context.rules_fingerprint)
        assert self._state is not None
        inventory = self._state.inventory
        now = now_ms()
        forced = self._due_at_restore(now)
        restored = self._restored
        touched: set[str] = set()
        rejected: list[OutgoingRecord] = []
        results: Tally[tuple[str, str]] = Tally()
        oldest = first_origin.timestamp_ms
        for group in values:
            for event, origin in group:
                if restored and origin.replayed:
                    forced.update(event.locations())
                outcome = inventory.apply_event(event, now)
                results[event.event_type.value, outcome.status] += 1
                if origin.timestamp_ms < oldest:
                    oldest = origin.timestamp_ms
                if outcome.status == "applied":
                    touched.update(outcome.touched)
                elif outcome.status == "rejected":
                    rejected.append(self.reject(origin, outcome.reason or "rejected",
                                                "too_late"))
        count_events(results)
        return _one_item(self._publish(touched, forced, now, oldest) + rejected), self.RETAIN

    def on_notify(self) -> tuple[Iterable[list[OutgoingRecord]], bool]:
        state = self._loaded()
        if state is None:
            return [], self.RETAIN
        now = now_ms()
        forced = self._due_at_restore(now)
        touched = set(state.inventory.expire(now)) if self._pending == "none" else set()
        return _one_item(self._publish(touched, forced, now, -1)), self.RETAIN

    def _due_at_restore(self, now: int) -> set[str]:
        """At a restored SKU's first call: the locations with a reservation due by now,
        which the crashed run may have expired and published."""
        if not self._check_due or self._state is None:
            return set()
        self._check_due = False
        return self._state.inventory.locations_due(max(now, self.context.earlier_clock_ms))

    def notify_at(self) -> datetime | None:
        if self._stored is None and self._state is None:
            return None
        if self._pending != "none":
            return datetime.now(tz=UTC)
        if self._stored is not None:
            expiry = self._stored.next_expiry
        else:
            assert self._state is not None
            expiry = self._state.inventory.next_expiry()
        if expiry is None:
            return None
        return datetime.fromtimestamp(expiry / 1000, tz=UTC)

    def snapshot(self) -> bytes:
        if self._stored is not None:  # untouched since the restore: nothing changed
            return self._stored.snapshot
        if self._state is None:
            return pickle.dumps(None)
        self._state.snapshot_run = self.context.run
        return dump_state(self._state)

    def _publish(self, touched: set[str], forced: set[str], now: int, origin_ms: int
                 ) -> list[OutgoingRecord]:
        """What changed, and the ``forced`` locations' keys whatever they hold (see the
        class); a pending rules change republishes the whole SKU."""
        if self._state is None:
            return []
        if forced and not forced.issubset(self._state.inventory.positions):
            # A replayed event names a location this run never created (an event the
            # crashed run applied and this one rejects before creating it): the crashed
            # run may have pooled it into channels, so every key goes out again.
            return self._republish(now, origin_ms, everything=True)
        if self._pending != "none":
            return self._republish(now, origin_ms,
                                   everything=self._pending == "everything" or bool(forced))
        if not touched and not forced:
            return []
        return self.output.publish(self._state.publisher, self._state.inventory, touched,
                                   self.rules, now, self.context.next_version, forced, origin_ms)

    def _republish(self, now: int, origin_ms: int, everything: bool) -> list[OutgoingRecord]:
        """Every key under a fresh version (``everything``), or each key whose number
        today's rules change, plus tombstones for keys the rules no longer give."""
        assert self._state is not None
        self._state.publisher, records = self.output.republish(
            self._state.publisher, self._state.inventory, self.rules, now,
            self.context.next_version, everything, origin_ms)
        self._pending = "none"
        self._state.published_under = self.context.rules_fingerprint
        return records
