"""Scenario recovery: kill -9 the engine holding 1M positions, restart, time to catch up.

    python -m benchmarks recovery [--skus 50000] [--locations 20] [--downtime 5] [--smoke]

1. 1M positions: one COUNT for each of 50k SKUs x 20 locations (3 DCs, 17 stores),
   pre-loaded; the engine (1 process, default 5 s epochs) folds them; the driver
   waits until every position's snapshot is on the topic.
2. Live traffic at 2k events/s (the retail mix on those positions, occurred_at =
   produce time) for 12 s, so that recovery snapshots after the load exist.
3. SIGKILL of the engine's process group; traffic goes on; after ``downtime`` seconds
   the engine is restarted on the same recovery directory; traffic goes on for 30 s.

Catch-up ("lag 0") is measured per event, as in freshness: an event is out when a
position snapshot of its key with as_of >= its occurred_at is on the topic. The
catch-up time is from the restart until every event produced before the restart
(during the downtime, and those the engine had consumed but not yet snapshotted) is
out. Also reported: restart to first output, and the lag over time.

Baselines in the same run, each from launch until its output is complete (no live
traffic): the hand loop restarting (its state is in memory, so it replays the whole
topic) and the engine started cold (empty recovery directory).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from availability.retail_day import Workload, retail_workload
from availability_domain.events import EventType, InventoryEvent
from benchmarks.kafka_util import (
    Delivery,
    TopicJanitor,
    admin_consumer,
    end_offsets,
    load_producer,
    produce_events,
)
from benchmarks.live import (
    LiveProducer,
    Phase,
    drain_after,
    lag_series,
    latency_stats,
    read_snapshots,
    reflect_times,
    wall_ms,
)
from benchmarks.report import ScenarioResult, Table, Target, new_figure, ratio, save_figure
from benchmarks.rules import RULES_200_STORES
from benchmarks.systems import ENGINE_1, LABELS, LOOP, Running, start


@dataclass
class RecoveryOptions:
    skus: int = 50_000
    locations: int = 20
    live_rate: int = 2_000
    before_kill_s: float = 12.0
    downtime: float = 5.0
    after_restart_s: float = 30.0
    epoch_interval: float | None = None
    """None: the engine's default (5 s)."""
    partitions: int = 4
    baselines: bool = True
    load_timeout_s: float = 900.0
    seed: int = 45
    rules: Path = RULES_200_STORES


SMOKE = RecoveryOptions(skus=250, live_rate=200, before_kill_s=2.0, downtime=1.0,
                        after_restart_s=2.0, epoch_interval=0.5,
                        load_timeout_s=120.0)


def _live_workload(options: RecoveryOptions) -> Workload:
    base = retail_workload(skus=options.skus, stores=options.locations - 3, seed=options.seed)
    return dataclasses.replace(base, late_share=0.0, ttl_ms=(2_000, 8_000))


def preload_counts(brokers: str, topic: str, options: RecoveryOptions) -> tuple[int, float]:
    """One COUNT per position, 10 minutes ago: (positions, seconds)."""
    workload = _live_workload(options)
    rng = random.Random(options.seed)
    at = wall_ms() - 600_000
    locations = workload.locations

    def counts() -> Any:
        for sku in workload.sku_ids:
            for location in locations:
                yield InventoryEvent(f"load-{sku}-{location}", EventType.COUNT, at, "erp", sku,
                                     location, rng.randint(0, 80))

    started = time.perf_counter()
    producer = load_producer(brokers)
    delivery = Delivery()
    count = sum(1 for _ in produce_events(producer, topic, counts(), delivery))
    delivery.check(producer, count)
    return count, time.perf_counter() - started


def wait_positions(consumer: Any, topic: str, expected: int, running: Running,
                   timeout_s: float) -> float:
    """Seconds from launch until the positions topic holds ``expected`` records."""
    deadline = time.monotonic() + timeout_s
    while sum(end_offsets(consumer, [topic]).values()) < expected:
        if not running.alive():
            raise RuntimeError(f"{running.name} exited: {running.log_tail(10)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{running.name}: {expected} positions not out in {timeout_s}s")
        time.sleep(0.2)
    return time.time() - running.launched


def cold_replay(system: str, brokers: str, janitor: TopicJanitor, events_topic: str,
                positions: int, options: RecoveryOptions, log: Any) -> dict[str, Any]:
    """A system reading the whole topic from scratch: launch until it has handled it all.

    Sentinels are produced at launch, after everything else in each partition, so the
    time their snapshots are out is when the replay is complete.
    """
    topics = janitor.run_topics(f"cold-{system}", events_topic, options.partitions)
    running = start(system, brokers, topics, options.rules,
                    epoch_interval=options.epoch_interval, group=janitor.group(system))
    sentinels = LiveProducer(load_producer(brokers, linger_ms=1), events_topic)
    try:
        done_ms = sentinels.caught_up(brokers, topics.positions, options.load_timeout_s)
        if done_ms is None or not running.alive():
            raise RuntimeError(f"{system} did not replay the topic: {running.log_tail(10)}")
    finally:
        running.stop()
    running.cleanup()
    seconds = done_ms / 1000 - running.launched
    log(f"  cold replay by {system}: {seconds:.1f}s")
    return {"system": system, "seconds": seconds}


def run(brokers: str, options: RecoveryOptions, out_dir: Path, smoke: bool = False,
        log: Any = print) -> ScenarioResult:
    positions = options.skus * options.locations
    result = ScenarioResult("recovery", smoke, {
        "positions": positions, "skus": options.skus, "locations": options.locations,
        "live_rate": options.live_rate, "before_kill_s": options.before_kill_s,
        "downtime_s": options.downtime, "after_restart_s": options.after_restart_s,
        "epoch_interval_s": options.epoch_interval or 5.0, "partitions": options.partitions})
    janitor = TopicJanitor(brokers)
    work = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    try:
        events_topic = janitor.events_topic("events", options.partitions)
        topics = janitor.run_topics("engine", events_topic, options.partitions)
        log(f"recovery: preloading {positions:,} COUNTs ...")
        loaded, preload_s = preload_counts(brokers, events_topic, options)
        consumer = admin_consumer(brokers)
        engine = start(ENGINE_1, brokers, topics, options.rules, work,
                       options.epoch_interval)
        live = LiveProducer(load_producer(brokers, linger_ms=1), events_topic)
        source = _live_workload(options).events(10**12)
        try:
            load_s = wait_positions(consumer, topics.positions, loaded, engine,
                                    options.load_timeout_s)
            log(f"recovery: {loaded:,} positions out {load_s:.1f}s after launch; live traffic")
            before = live.run(source, options.live_rate, options.before_kill_s,
                              Phase("before kill", options.live_rate))
            killed_ms = wall_ms()
            engine.kill()
            log("recovery: engine SIGKILLed")
            downtime = live.run(source, options.live_rate, options.downtime,
                                Phase("downtime", options.live_rate))
            restarted_ms = wall_ms()
            engine = start(ENGINE_1, brokers, topics, options.rules, work,
                           options.epoch_interval)
            log("recovery: engine restarted")
            after = live.run(source, options.live_rate, options.after_restart_s,
                             Phase("after restart", options.live_rate))
            live.confirm()
            settled = live.caught_up(brokers, topics.positions, options.load_timeout_s)
            alive = engine.alive() and settled is not None
        finally:
            engine.stop()
            consumer.close()
        if not alive:
            raise RuntimeError(f"restarted engine died or never caught up: "
                               f"{engine.log_tail(10)}")
        snapshots = read_snapshots(brokers, topics.positions)
        phases = [before, downtime, after]
        reflected = [reflect_times(phase, snapshots) for phase in phases]
        catch_up_s, never = drain_after(phases, reflected, restarted_ms)
        first_after = min((t for t in snapshots_after(snapshots, restarted_ms)), default=None)
        xs, ys = lag_series(phases, reflected, before.started_ms, after.ended_ms + 5_000)
        after_latency = latency_stats(after, reflected[2])
        baselines = []
        if options.baselines:
            for system in (LOOP, ENGINE_1):
                baselines.append(cold_replay(system, brokers, janitor, events_topic, loaded,
                                             options, log))
    finally:
        janitor.delete_all()
        shutil.rmtree(work, ignore_errors=True)
    shift = before.started_ms
    result.data.update({
        "preload_s": preload_s, "initial_load_s": load_s,
        "events_before_restart": before.produced + downtime.produced,
        "catch_up_s": catch_up_s, "never_reflected": never,
        "first_output_after_restart_s": (first_after - restarted_ms) / 1000
        if first_after else None,
        "after_restart_latency": vars(after_latency),
        "baselines": baselines,
        "lag": {"t_s": xs, "events": ys, "killed_s": (killed_ms - shift) / 1000,
                "restarted_s": (restarted_ms - shift) / 1000},
        "failed": catch_up_s is None,
    })
    log(f"recovery: caught up {catch_up_s}s after the restart")
    rows = [[f"{LABELS[ENGINE_1]}: restart after kill -9 (recovery snapshots)",
             catch_up_s, result.data["first_output_after_restart_s"],
             before.produced + downtime.produced, after_latency.p99_ms, after_latency.max_ms,
             1.0]]
    for b in baselines:
        label = ("hand loop restart: state in memory, replays the whole topic"
                 if b["system"] == LOOP else f"{LABELS[ENGINE_1]}: cold start, "
                 "empty recovery dir (replays everything)")
        rows.append([label, b["seconds"], None, None, None, None, ratio(b["seconds"],
                                                                        catch_up_s)])
    result.tables.append(Table(
        f"Recovery with {loaded:,} positions ({options.skus:,} SKUs x {options.locations} "
        f"locations), {options.live_rate:,} events/s live, {options.downtime:.0f}s down",
        ["run", "seconds to caught up", "restart to first output s",
         "events produced before restart", "p99 ms of events after restart", "max ms",
         "x engine restart"],
        rows,
        ["engine: from the restart until every event produced before it is reflected on "
         "the positions topic (kill -9 at "
         f"{(killed_ms - shift) / 1000:.1f}s, restart at {(restarted_ms - shift) / 1000:.1f}s "
         "of the live traffic)",
         "baselines: from launch until their output is complete, without live traffic",
         f"initial load: {loaded:,} COUNTs out {load_s:.1f}s after the engine's launch"]))
    if not smoke and catch_up_s is not None:
        for goal_s in (10, 3):
            result.targets.append(Target(
                f"recovery: kill -9 + restart with 1M positions, lag 0 in <= {goal_s} s",
                f"{catch_up_s:.1f} s ({positions:,} positions)", catch_up_s <= goal_s))
    _chart(result, out_dir)
    return result


def snapshots_after(snapshots: Any, after_ms: int) -> Any:
    """Append times of snapshots written after ``after_ms``."""
    for appended in snapshots.appended.values():
        for stamp in appended:
            if stamp >= after_ms:
                yield stamp


def _chart(result: ScenarioResult, out_dir: Path) -> None:
    lag = result.data["lag"]
    figure, axes = new_figure()
    axes.plot(lag["t_s"], lag["events"], label="engine, 1 process")
    axes.axvline(lag["killed_s"], color="red", linestyle="--", label="kill -9")
    axes.axvline(lag["restarted_s"], color="green", linestyle="--", label="restart")
    if result.data["catch_up_s"] is not None:
        axes.axvline(lag["restarted_s"] + result.data["catch_up_s"], color="black",
                     linestyle=":", label="caught up")
    axes.set_xlabel("seconds of live traffic")
    axes.set_ylabel("events produced, not yet on the topic")
    axes.set_title(f"Recovery lag, {result.parameters['positions']:,} positions")
    axes.legend(fontsize=8)
    save_figure(figure, out_dir, "recovery-lag.png", result)

