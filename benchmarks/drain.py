"""Scenario drain: a pre-loaded backlog, time until every snapshot is out.

    python -m benchmarks drain [--events 2000000] [--smoke]

One invocation, one broker, one events topic loaded once with N events of the retail
workload (100k Zipf SKUs, 3 DCs, 200 stores, the full mix with duplicates, late
events and reservations that carry an expiry). Then, one after the other, each system
reads that topic from the beginning into its own fresh output topics:

* the engine with 1 and with 2 processes (fresh recovery directories);
* the hand-written confluent-kafka loop (baseline, benchmarks.handloop);
* the Quix Streams app (peer, benchmarks.quix_app).

Drained means *all expected output is present*: the driver polls the output topics'
end offsets (cheap); once they stop growing for ``quiet`` seconds it scans them and
compares the latest value per key with the in-process reference fold of the same
events (positions: every quantity and as_of; channels: ats). The drain time runs from
the system's launch to the broker append time of its last output record
(LogAppendTime topics), so the scan itself is not timed. A run whose tables differ
from the reference is reported as a mismatch, with examples.

The workload's event times end a day before the run and every expiry is at most 30
minutes after its reservation, so expiry has the same effect on every system and on
the reference, whatever the wall clock (each expiring reservation counts as expired).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from availability.retail_day import retail_workload
from availability_contracts.codec import Codec
from availability_contracts.schemas import CHANNEL_SCHEMA, POSITION_SCHEMA
from availability_contracts.times import DAY_MS, MINUTE_MS
from availability_domain.rules import load_rules
from benchmarks.fold import ChannelTable, PositionTable, ReferenceFold, now_ms, position_row
from benchmarks.kafka_util import (
    Delivery,
    TopicJanitor,
    admin_consumer,
    end_offsets,
    load_producer,
    produce_events,
    scan,
)
from benchmarks.report import ScenarioResult, Table, Target, new_figure, ratio, save_figure
from benchmarks.rules import RULES_200_STORES
from benchmarks.systems import (
    ALL_SYSTEMS,
    ENGINE_1,
    ENGINE_2,
    LABELS,
    LOOP,
    QUIX,
    RELEASE_1,
    RELEASE_2,
    start,
)


@dataclass
class DrainOptions:
    events: int = 2_000_000
    skus: int = 100_000
    stores: int = 200
    seed: int = 42
    partitions: int = 4
    systems: tuple[str, ...] = ALL_SYSTEMS
    quiet_s: float = 6.0
    timeout_s: float = 1800.0
    rules: Path = RULES_200_STORES


SMOKE = DrainOptions(events=5_000, skus=1_000, quiet_s=0.75, timeout_s=120.0)


@dataclass
class RunOutcome:
    system: str
    events: int
    drained: bool = False
    seconds: float | None = None
    first_output_s: float | None = None
    positions_out: int = 0
    channels_out: int = 0
    dlq_out: int = 0
    cpu_s: float | None = None
    exit_code: int | None = None
    mismatches: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def rate(self) -> float | None:
        return None if not self.seconds else self.events / self.seconds


def preload(brokers: str, topic: str, options: DrainOptions
            ) -> tuple[int, PositionTable, ChannelTable, dict[str, Any]]:
    """Produce the backlog once and fold it in process: (count, tables, stats)."""
    start_ms = (now_ms() - DAY_MS) // MINUTE_MS * MINUTE_MS
    workload = retail_workload(skus=options.skus, stores=options.stores, seed=options.seed,
                               start_ms=start_ms, expiring=True)
    reference = ReferenceFold(load_rules(options.rules))
    producer = load_producer(brokers)
    delivery = Delivery()
    count = 0
    fold_s = 0.0
    started = time.perf_counter()
    for event in produce_events(producer, topic, workload.events(options.events), delivery):
        tick = time.perf_counter()
        reference.add(event)
        fold_s += time.perf_counter() - tick
        count += 1
    delivery.check(producer, count)
    preload_s = time.perf_counter() - started
    tick = time.perf_counter()
    positions, channels = reference.tables()
    tables_s = time.perf_counter() - tick
    stats = {"preload_s": preload_s, "reference_apply_s": fold_s,
             "reference_publish_s": tables_s, "applied": reference.applied,
             "duplicates": reference.duplicates, "rejected": reference.rejected,
             "positions": len(positions), "channel_keys": len(channels),
             "workload_start_ms": start_ms}
    return count, positions, channels, stats


def compare(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """Missing, extra and different keys, with a few examples of each."""
    missing = [key for key in expected if key not in actual]
    extra = [key for key in actual if key not in expected]
    different = [key for key, value in expected.items()
                 if key in actual and actual[key] != value]
    if not (missing or extra or different):
        return {}
    return {"missing": len(missing), "extra": len(extra), "different": len(different),
            "examples": [{"key": key, "expected": expected.get(key), "actual": actual.get(key)}
                         for key in (missing[:2] + extra[:2] + different[:3])]}


def verify(brokers: str, topics: Any, positions: PositionTable, channels: ChannelTable,
           codec: Codec) -> tuple[dict[str, Any], int | None, int | None, list[int]]:
    """(mismatches, first and last output append time ms, record counts)."""
    scanned = [scan(brokers, topic) for topic in (topics.positions, topics.channels,
                                                  topics.dlq)]
    got_positions = {key: position_row(codec.decode(POSITION_SCHEMA, value))
                     for key, value in scanned[0].latest.items()}
    got_channels = {key: codec.decode(CHANNEL_SCHEMA, value)["ats"]
                    for key, value in scanned[1].latest.items()}
    mismatches = {}
    if bad := compare(positions, got_positions):
        mismatches["positions"] = bad
    if bad := compare(channels, got_channels):
        mismatches["channels"] = bad
    firsts = [s.first_ms for s in scanned if s.first_ms is not None]
    lasts = [s.last_ms for s in scanned if s.last_ms is not None]
    return (mismatches, min(firsts) if firsts else None, max(lasts) if lasts else None,
            [s.records for s in scanned])


def run_system(system: str, brokers: str, janitor: TopicJanitor, events_topic: str,
               count: int, positions: PositionTable, channels: ChannelTable,
               options: DrainOptions, log: Any) -> RunOutcome:
    outcome = RunOutcome(system, count)
    topics = janitor.run_topics(system, events_topic, options.partitions)
    codec = Codec()
    consumer = admin_consumer(brokers)
    outputs = [topics.positions, topics.channels, topics.dlq]
    cpu_before = _children_cpu()
    running = start(system, brokers, topics, options.rules, group=janitor.group(system))
    log(f"  {system}: started ({LABELS[system]})")
    last_total, changed_at = -1, time.monotonic()
    deadline = time.monotonic() + options.timeout_s
    try:
        while True:
            time.sleep(0.25)
            total = sum(end_offsets(consumer, outputs).values())
            now = time.monotonic()
            crashed = not running.alive()
            if total != last_total and not crashed:
                last_total, changed_at = total, now
                if now > deadline:
                    outcome.error = f"still producing output after {options.timeout_s:.0f}s"
                    break
                continue
            # every expected key needs at least one record: do not scan before that
            if not crashed and (total < len(positions) + len(channels)
                                or now - changed_at < options.quiet_s):
                if now > deadline:
                    outcome.error = f"no complete output after {options.timeout_s:.0f}s"
                    break
                continue
            mismatches, first_ms, last_ms, counts = verify(brokers, topics, positions,
                                                           channels, codec)
            outcome.mismatches = mismatches
            outcome.positions_out, outcome.channels_out, outcome.dlq_out = counts
            if last_ms is not None:
                outcome.seconds = last_ms / 1000 - running.launched
            if first_ms is not None:
                outcome.first_output_s = first_ms / 1000 - running.launched
            if not mismatches:
                outcome.drained = True
                break
            if crashed:
                outcome.error = f"exited with {running.process.returncode}: " + \
                    running.log_tail(10)
                break
            if time.monotonic() > deadline:
                outcome.error = "output differs from the reference fold"
                break
            log(f"  {system}: output quiet but incomplete; waiting")
            changed_at = time.monotonic()
    finally:
        outcome.exit_code = running.stop()
        consumer.close()
        if outcome.drained:
            running.cleanup()  # keep a failed run's log and recovery state to look at
    outcome.cpu_s = _children_cpu() - cpu_before
    rate = f"{outcome.rate:,.0f} events/s" if outcome.rate else "no rate"
    log(f"  {system}: {'drained' if outcome.drained else 'NOT drained'} in "
        f"{outcome.seconds or float('nan'):.1f}s ({rate}); cpu {outcome.cpu_s:.1f}s"
        + (f"; {outcome.error}" if outcome.error else ""))
    return outcome


def _children_cpu() -> float:
    """CPU seconds of every reaped child (a system's processes, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(brokers: str, options: DrainOptions, out_dir: Path, smoke: bool = False,
        log: Any = print) -> ScenarioResult:
    result = ScenarioResult("drain", smoke, {
        "events": options.events, "skus": options.skus, "dcs": 3, "stores": options.stores,
        "partitions": options.partitions, "systems": list(options.systems),
        "quiet_s": options.quiet_s, "rules": options.rules.name})
    janitor = TopicJanitor(brokers)
    try:
        events_topic = janitor.events_topic("events", options.partitions)
        log(f"drain: preloading {options.events:,} events into {events_topic} ...")
        count, positions, channels, stats = preload(brokers, events_topic, options)
        result.data["preload"] = stats
        log(f"drain: preloaded in {stats['preload_s']:.1f}s; reference: "
            f"{stats['positions']:,} positions, {stats['channel_keys']:,} channel keys")
        outcomes = [run_system(system, brokers, janitor, events_topic, count, positions,
                               channels, options, log) for system in options.systems]
    finally:
        janitor.delete_all()
    result.data["runs"] = [{**vars(o), "events_per_s": o.rate} for o in outcomes]
    result.data["failed"] = any(not o.drained for o in outcomes)
    by_name = {o.system: o for o in outcomes}
    loop_rate = by_name[LOOP].rate if LOOP in by_name else None
    quix_rate = by_name[QUIX].rate if QUIX in by_name else None
    release_rate = max((by_name[n].rate or 0.0 for n in (RELEASE_1, RELEASE_2)
                        if n in by_name and by_name[n].drained), default=None) or None
    apply_rate = count / stats["reference_apply_s"] if stats["reference_apply_s"] else None
    rows = []
    for o in outcomes:
        correct = "yes" if not o.mismatches else _describe(o.mismatches)
        if o.error and o.drained is False and not o.mismatches:
            correct = o.error
        cpu_rate = count / o.cpu_s if o.cpu_s else None
        rows.append([LABELS[o.system], o.seconds, o.rate, ratio(o.rate, release_rate),
                     ratio(o.rate, loop_rate), ratio(o.rate, quix_rate), o.first_output_s,
                     o.positions_out + o.channels_out, o.dlq_out, o.cpu_s, cpu_rate, correct])
    rows.append(["reference: pure domain apply in process, no Kafka/codec/publish",
                  stats["reference_apply_s"], apply_rate, ratio(apply_rate, release_rate),
                  ratio(apply_rate, loop_rate), ratio(apply_rate, quix_rate), None, None, None,
                  None, None, "-"])
    result.tables.append(Table(
        f"Backlog drain of {count:,} events ({options.skus:,} SKUs, 3 DCs, "
        f"{options.stores} stores)",
        ["system", "seconds", "events/s", "vs release", "vs loop", "vs Quix",
         "first output s",
         "snapshots out", "DLQ", "CPU s", "events/CPU-s", "final tables = reference"],
        rows,
        [f"reference fold: {stats['applied']:,} applied, {stats['duplicates']:,} duplicates, "
         f"{stats['rejected']:,} rejected -> {stats['positions']:,} positions, "
         f"{stats['channel_keys']:,} channel keys",
         "seconds: launch of the system to the append time of its last output record; "
         "first output s: launch to its first output record (start-up)",
         "CPU s: user+system CPU of the system's processes over the whole run "
         "(2 cores: a 2-process run can use both)",
         "Quix publishes per event (no batch hook), the engine and the loop per batch and "
         "SKU, so 'snapshots out' differs; the final tables must not",
         "vs release: against the faster of the previous release's runs (v0.1, from a git "
         "worktree of its commit, same machine, same backlog, this run)",
         "the engine runs its compiled hot path (native/: the Avro codec, the event reader, "
         "the snapshot publisher; byte-identical to the Python reference); the loop "
         "and Quix use the pure-Python domain code and codec, as teams on those tools "
         "would (AVAILABILITY_PURE_PYTHON=1)"]))
    _targets(result, by_name, release_rate, quix_rate)
    _chart(result, outcomes, out_dir)
    return result


def _describe(mismatches: dict[str, Any]) -> str:
    return "; ".join(f"{table}: {m['missing']} missing, {m['extra']} extra, "
                     f"{m['different']} different" for table, m in mismatches.items())


def _targets(result: ScenarioResult, by_name: dict[str, RunOutcome],
             release_rate: float | None, quix_rate: float | None) -> None:
    two, one = by_name.get(ENGINE_2), by_name.get(ENGINE_1)
    if two is None or not two.drained or not two.rate:
        return
    for target, peer, rate, goal in (
            ("drain: engine (2 processes) >= 5x the previous release", "release", release_rate,
             5),
            ("drain: engine (2 processes) >= 8x Quix Streams", QUIX, quix_rate, 8)):
        if rate:
            times = two.rate / rate
            result.targets.append(Target(target, f"{times:.2f}x", times >= goal))
        else:
            result.targets.append(Target(target, f"{peer} not drained in this run", None))
    if one is not None and one.drained and one.rate:
        scale = two.rate / one.rate
        result.targets.append(Target("drain: 2 processes >= 1.6x 1 process", f"{scale:.2f}x",
                                     scale >= 1.6))


def _chart(result: ScenarioResult, outcomes: list[RunOutcome], out_dir: Path) -> None:
    figure, axes = new_figure()
    names = [LABELS[o.system].split(" (")[0].replace("availability ", "") for o in outcomes]
    rates = [o.rate or 0 for o in outcomes]
    bars = axes.bar(names, rates, color=["#1f77b4" if o.system.startswith("engine")
                                         else "#7f7f7f" for o in outcomes])
    axes.bar_label(bars, labels=[f"{r:,.0f}" for r in rates])
    axes.set_ylabel("events/s (launch to last snapshot)")
    axes.set_title(f"Backlog drain, {result.parameters['events']:,} events "
                   f"({result.machine['cores']} cores)")
    axes.tick_params(axis="x", labelsize=8)
    save_figure(figure, out_dir, "drain-throughput.png", result)
