"""Scenario checkpoint: what one recovery checkpoint writes, and what it costs, as history grows.

    python -m benchmarks checkpoint [--history 1000000,2000000,5000000,10000000] [--smoke]

The engine's recovery state is Bytewax's: at the end of every epoch, each SKU touched in
that epoch is pickled whole (``SkuAvailabilityLogic.snapshot``, :func:`dump_state`: its
``SkuState``, the positions, the publisher's record and the dedupe memory) and written to
the recovery store. This scenario runs that state in process, without Kafka or Bytewax: the retail
workload is folded SKU by SKU (``SkuInventory.apply_event``, then the publisher once per
touched SKU per 50,000 events; in the measured windows per 2,000-event batch, as the
engine's batches do), the clock following event time. At each
history point (events folded so far) the next ``window`` events (default 50,000: a 10 s
epoch at 5k events/s, so every point has the same rate of change) are folded and then
checkpointed exactly as the engine does: ``dump_state`` of every touched SKU, after two
untimed snapshots of every SKU standing for the snapshots of the history's epochs (a
snapshot reuses the pickled bytes of positions unchanged across the SKU's last two). Reported
per point: keys written, bytes written, the pause (pickling time, during which the
worker folds nothing), the largest key; ratios against the first point.

Then the same snapshots go into a recovery partition the way Bytewax 0.21 writes them
(:class:`SnapshotStore`: its ``snaps`` table, its upsert in one transaction, then its
commit, which deletes each key's previous snapshot, written untimed for every SKU before
the window): the store's write and its garbage collection are timed on their own, since
both grow with the bytes and the worker waits for them too.

Memory per position and per remembered event id comes from the live state at each point
(deep ``sys.getsizeof`` over every 20th SKU: positions with their deltas and
reservations and the bytes a snapshot reuses for them; the remembered ids with their
strings and sealed chunks). With the default
horizons (7 days of dedupe, 24 h of lateness) and the workload's pace (8 ms of event
time per event: 10M events are about 22 hours), nothing is old enough to be forgotten,
so the state is bounded by the horizons only in the sense that it stops growing after
them.
"""

from __future__ import annotations

import gc
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from availability.retail_day import retail_workload
from availability_contracts.codec import Codec
from availability_contracts.topics import TopicNames
from availability_domain.events import InventoryEvent
from availability_domain.inventory import SkuInventory
from availability_domain.rules import Rules, load_rules
from availability_domain.snapshots import count_versions
from benchmarks.report import ScenarioResult, Table, Target, new_figure, ratio, save_figure
from benchmarks.rules import RULES_200_STORES
from dataflows.runner import tune_garbage_collector
from dataflows.sku_logic import SkuState, dump_state
from dataflows.snapshot_output import snapshot_output

BATCH = 2_000
"""Events per engine batch: the publisher runs once per touched SKU per batch."""
HISTORY_PUBLISH = 50_000
"""Between the measured windows the publisher runs once per touched SKU per this many
events: its record (last value per key) is the same, only fewer versions pass, and
folding 10M events takes minutes instead of half an hour."""


@dataclass
class CheckpointOptions:
    history: list[int] = field(default_factory=lambda: [1_000_000, 2_000_000, 5_000_000,
                                                        10_000_000])
    window: int = 50_000
    skus: int = 100_000
    stores: int = 200
    rules: Path = RULES_200_STORES


SMOKE = CheckpointOptions(history=[2_000, 6_000], window=1_000, skus=500)


class Fold:
    """The engine's per-SKU state, one ``SkuState`` per SKU, folded as its batches are."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.fingerprint = rules.fingerprint()
        self.output = snapshot_output(Codec(), TopicNames())
        """The engine's publisher (compiled where built), so the state pickled is the
        engine's."""
        self.states: dict[str, SkuState] = {}
        self.event_time: tuple[int, int] | None = None

    def fold(self, events: Iterator[InventoryEvent], count: int, publish_every: int = BATCH
             ) -> set[str]:
        """Fold the next ``count`` events, publishing touched SKUs every ``publish_every``;
        the SKUs whose state they changed."""
        touched: set[str] = set()
        batch: dict[str, set[str]] = {}
        now = self.event_time[1] if self.event_time else 0
        for n, event in zip(range(count), events, strict=False):
            state = self.states.get(event.sku)
            if state is None:
                state = self.states[event.sku] = SkuState(
                    SkuInventory(event.sku), self.output.new_publisher(), self.fingerprint)
            if self.event_time is None:
                self.event_time = (event.occurred_at, event.occurred_at)
            now = max(now, event.occurred_at)
            outcome = state.inventory.apply_event(event, now)
            if outcome.status == "applied":
                batch.setdefault(event.sku, set()).update(outcome.touched)
            if n % publish_every == publish_every - 1:
                touched.update(self._publish(batch, now))
        touched.update(self._publish(batch, now))
        if self.event_time is not None:
            self.event_time = (self.event_time[0], now)
        return touched

    def _publish(self, batch: dict[str, set[str]], now: int) -> list[str]:
        for sku, locations in batch.items():
            state = self.states[sku]
            self.output.publish(state.publisher, state.inventory, locations, self.rules, now,
                                count_versions, (), -1)
        published = list(batch)
        batch.clear()
        return published

    def prime(self, store: SnapshotStore | None = None) -> None:
        """Untimed snapshots of every SKU, standing for the snapshots the engine took at
        the end of the history's epochs (folding the history here without them would
        make the measured checkpoint pickle every position as if new); the last of them
        go into ``store`` as the rows the measured checkpoint replaces, as the engine's
        recovery partitions hold a row for every SKU."""
        for _ in range(1 if store is not None else 2):
            for state in self.states.values():
                dump_state(state)
        if store is not None:
            store.epoch((sku, dump_state(state)) for sku, state in self.states.items())

    def checkpoint(self, keys: set[str], store: SnapshotStore | None = None
                   ) -> dict[str, Any]:
        """Pickle every touched SKU's state, as Bytewax's snapshot step does; then, given
        a ``store``, write the snapshots to it and collect the ones they replace."""
        snapshots: list[tuple[str, bytes]] = []
        slowest = 0.0
        started = time.perf_counter()
        for sku in keys:
            t0 = time.perf_counter()
            snapshots.append((sku, dump_state(self.states[sku])))
            slowest = max(slowest, time.perf_counter() - t0)
        pause = time.perf_counter() - started
        sizes = [len(snapshot) for _, snapshot in snapshots]
        measured = {"keys": len(keys), "bytes": sum(sizes), "pause_s": pause,
                    "largest_bytes": max(sizes, default=0), "slowest_key_s": slowest}
        if store is not None:
            measured.update(store.epoch(snapshots))
        return measured

    def memory(self, sample: int = 5_000) -> dict[str, Any]:
        """Counts over every SKU; bytes per position and per id from every n-th SKU (up to
        ``sample`` of them, the best sellers among them), scaled to the totals."""
        positions = sum(len(state.inventory.positions) for state in self.states.values())
        ids = sum(len(state.inventory.seen) for state in self.states.values())
        step = max(1, len(self.states) // sample)
        sampled_positions = sampled_ids = position_bytes = id_bytes = 0
        for state in list(self.states.values())[::step]:
            inventory = state.inventory
            sampled_positions += len(inventory.positions)
            sampled_ids += len(inventory.seen)
            position_bytes += deep_size(inventory.positions) + deep_size(inventory._frames)
            id_bytes += deep_size(inventory.seen)
        per_position = position_bytes / sampled_positions if sampled_positions else 0
        per_id = id_bytes / sampled_ids if sampled_ids else 0
        span = (self.event_time[1] - self.event_time[0]) / 3_600_000 if self.event_time else 0
        return {"skus": len(self.states), "positions": positions, "remembered_ids": ids,
                "bytes_per_position": per_position, "bytes_per_remembered_id": per_id,
                "position_mb": per_position * positions / 1e6,
                "dedupe_mb": per_id * ids / 1e6, "event_time_h": span}


class SnapshotStore:
    """A recovery partition as Bytewax 0.21 keeps it (``src/recovery.rs``): the ``snaps``
    table, WAL, each epoch's snapshots upserted in one transaction, then the epoch's
    commit, which deletes every snapshot older than a key's newest. Only the statements
    that touch the snapshots' bytes; one partition instead of the engine's eight (the
    bytes and the keys are the same)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS snaps (created_at TEXT NOT NULL DEFAULT "
            "CURRENT_TIMESTAMP, step_id TEXT NOT NULL, state_key TEXT NOT NULL, "
            "snap_epoch INTEGER NOT NULL, ser_change BLOB, "
            "PRIMARY KEY (step_id, state_key, snap_epoch)) STRICT")
        self.epoch_number = 0

    def epoch(self, snapshots: Iterable[tuple[str, bytes]]) -> dict[str, float]:
        """Write one epoch's snapshots and commit it: seconds spent in each."""
        self.epoch_number += 1
        started = time.perf_counter()
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) "
            "VALUES ('fold', ?1, ?2, ?3) ON CONFLICT (step_id, state_key, snap_epoch) "
            "DO UPDATE SET ser_change = EXCLUDED.ser_change",
            ((key, self.epoch_number, snapshot) for key, snapshot in snapshots))
        self.db.execute("COMMIT")
        written = time.perf_counter()
        self.db.execute("BEGIN")
        self.db.execute(
            "WITH max_epoch_snapshots AS (SELECT step_id, state_key, MAX(snap_epoch) AS "
            "snap_epoch FROM snaps WHERE snap_epoch <= ?1 GROUP BY step_id, state_key), "
            "garbage_snapshots AS (SELECT step_id, state_key, snaps.snap_epoch FROM snaps "
            "JOIN max_epoch_snapshots USING (step_id, state_key) "
            "WHERE snaps.snap_epoch < max_epoch_snapshots.snap_epoch) "
            "DELETE FROM snaps WHERE (step_id, state_key, snap_epoch) IN garbage_snapshots",
            (self.epoch_number,))
        self.db.execute("COMMIT")
        return {"store_write_s": written - started,
                "store_gc_s": time.perf_counter() - written}

    def close(self) -> None:
        self.db.close()


def deep_size(value: object) -> int:
    """Bytes of ``value`` and everything it holds (containers, slotted objects such as
    positions); shared small ints and interned strings are counted each time, an upper
    bound."""
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        return size + sum(deep_size(k) + deep_size(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return size + sum(deep_size(item) for item in value)
    if isinstance(value, bytes | str | int):
        return size
    if hasattr(value, "__slots__"):
        return size + sum(deep_size(getattr(value, name)) for name in _slots(type(value))
                          if hasattr(value, name))
    return size


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = getattr(klass, "__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    return names


def run(brokers: str, options: CheckpointOptions, out_dir: Path, smoke: bool = False,
        log: Any = print) -> ScenarioResult:
    """``brokers`` is unused: the checkpoint is measured in process, with the engine's
    garbage-collector settings (restored afterwards: the smoke test runs in pytest)."""
    thresholds = gc.get_threshold()
    tune_garbage_collector()
    try:
        return _measure(options, out_dir, smoke, log)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _measure(options: CheckpointOptions, out_dir: Path, smoke: bool, log: Any
             ) -> ScenarioResult:
    result = ScenarioResult("checkpoint", smoke, {
        "history": options.history, "window": options.window, "skus": options.skus,
        "stores": options.stores, "batch": BATCH, "rules": options.rules.name},
        uses_broker=False)
    fold = Fold(load_rules(options.rules))
    events = iter(retail_workload(skus=options.skus, stores=options.stores).events(
        max(options.history) + options.window))
    points = []
    started = time.perf_counter()
    folded = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="checkpoint-store-", dir=out_dir) as where:
        store = SnapshotStore(Path(where) / "part-0.sqlite3")
        with closing(store):
            for history in sorted(options.history):
                fold.fold(events, history - folded, publish_every=HISTORY_PUBLISH)
                fold.prime(store)
                touched = fold.fold(events, options.window)
                folded = history + options.window
                point = {"history": history, **fold.checkpoint(touched, store),
                         **fold.memory()}
                points.append(point)
                log(f"checkpoint: {history:,} events of history: {point['keys']:,} keys, "
                    f"{point['bytes'] / 1e6:.1f} MB, pause {point['pause_s'] * 1000:.0f} ms, "
                    f"store write {point['store_write_s'] * 1000:.0f} ms, "
                    f"gc {point['store_gc_s'] * 1000:.0f} ms "
                    f"({time.perf_counter() - started:.0f}s)")
    result.data["points"] = points
    first = points[0]
    result.tables.append(Table(
        f"One checkpoint of {options.window:,} events' changes, by events of history",
        ["history (events)", "event time (h)", "keys written", "MB written", "vs first",
         "pause ms", "vs first", "store write ms", "store gc ms", "largest key KB",
         "slowest key ms"],
        [[p["history"], p["event_time_h"], p["keys"], p["bytes"] / 1e6,
          ratio(p["bytes"], first["bytes"]), p["pause_s"] * 1000,
          ratio(p["pause_s"], first["pause_s"]), p["store_write_s"] * 1000,
          p["store_gc_s"] * 1000, p["largest_bytes"] / 1000,
          p["slowest_key_s"] * 1000] for p in points],
        ["the pause is the pickling and compressing of every touched SKU's whole state "
         "at the epoch's end (Bytewax's snapshot step)",
         "store write and gc: the same snapshots written to a recovery partition with "
         "Bytewax 0.21's statements, then its commit deleting the snapshots they "
         "replace (one partition, on this machine's disk); the worker waits for these "
         "too",
         "same window (same rate of change) at every point, so any growth is history"]))
    result.tables.append(Table(
        "State in memory, by events of history",
        ["history (events)", "SKUs", "positions", "remembered event ids",
         "bytes per position", "bytes per remembered id", "positions MB", "dedupe MB"],
        [[p["history"], p["skus"], p["positions"], p["remembered_ids"],
          p["bytes_per_position"], p["bytes_per_remembered_id"], p["position_mb"],
          p["dedupe_mb"]] for p in points],
        ["deep sys.getsizeof: a position with its late-event deltas, reservations and "
         "the snapshot bytes kept for reuse; a remembered id is its dict slot and string; "
         "both are kept for their horizons (24 h of lateness, 7 days of dedupe) of event "
         "time"]))
    if not smoke:
        result.targets.extend(growth_targets(points))
    _chart(result, points, out_dir)
    return result


def growth_targets(points: list[dict[str, Any]]) -> list[Target]:
    """The history goal: cost at 10M events (or the longest history) against 1M.

    Nothing is claimed when the run has no point beyond the one it compares with.
    """
    low = next((p for p in points if p["history"] == 1_000_000), points[0])
    high = next((p for p in points if p["history"] == 10_000_000), points[-1])
    if high["history"] <= low["history"]:
        return []

    def wait(p: dict[str, Any]) -> float:
        return float(p["pause_s"] + p["store_write_s"] + p["store_gc_s"])

    between = f"between {low['history']:,} and {high['history']:,} events of history"
    return [Target(f"checkpoint {what} within 1.2x {between}", f"{grown:.2f}x", grown <= 1.2)
            for what, grown in (
                ("bytes written", ratio(high["bytes"], low["bytes"])),
                ("pause", ratio(high["pause_s"], low["pause_s"])),
                ("pause with the store's write and gc", ratio(wait(high), wait(low))))]


def _chart(result: ScenarioResult, points: list[dict[str, Any]], out_dir: Path) -> None:
    figure, axes = new_figure(8, 4.5)
    history = [p["history"] / 1e6 for p in points]
    axes.plot(history, [p["bytes"] / 1e6 for p in points], "o-", label="MB written")
    axes.set_xlabel("events of history (millions)")
    axes.set_ylabel("MB per checkpoint")
    twin = axes.twinx()
    twin.plot(history, [p["pause_s"] * 1000 for p in points], "s--", color="#ff7f0e",
              label="pause ms")
    twin.set_ylabel("pause (ms)")
    axes.set_title("One checkpoint of the same window of changes, by history")
    figure.legend(loc="upper left")
    save_figure(figure, out_dir, "checkpoint-cost.png", result)
