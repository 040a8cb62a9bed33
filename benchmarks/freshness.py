"""Scenario freshness: produce-to-snapshot latency at steady rates, then a 10x burst.

    python -m benchmarks freshness [--rates 5000,20000,50000] [--seconds 30]
                                   [--epoch-interval SECONDS] [--smoke]

For each system (default: the engine with 1 process, the hand loop, Quix), on fresh
topics: a short warm-up, then each steady level (events/s of the live retail mix,
100k Zipf SKUs, 200 stores, reservations with 2-8 s holds so expiry timers fire),
produced in real time by this driver; after each level the driver waits until the
system has handled all of it (sentinel events, see LiveProducer.caught_up). Then the
burst: the base rate, a 10x flash sale on 20 hot SKUs for a few seconds (base + 9x
base of demand), the base rate again.

Latency per event (see benchmarks.live): occurred_at = produce time, reflected = the
append time of the first position snapshot of its key with as_of >= occurred_at;
p50/p99/p99.9/max from an HDR histogram. Burst drain time: after the burst ends, the
seconds until every event produced up to its end is on the topic. The lag chart shows
events produced but not yet reflected, every 100 ms.

The producer shares the two cores with the system under test (it costs about a third
of a core at 50k events/s); it uses linger.ms=1, like a latency-minded source system.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from availability.retail_day import Workload, flash_sale_mix, retail_workload
from benchmarks.kafka_util import (
    TopicJanitor,
    admin_consumer,
    end_offsets,
    load_producer,
)
from benchmarks.live import (
    LiveProducer,
    Phase,
    drain_after,
    interleave,
    lag_series,
    latency_stats,
    read_snapshots,
    reflect_times,
)
from benchmarks.report import ScenarioResult, Table, Target, new_figure, ratio, save_figure
from benchmarks.rules import RULES_200_STORES
from benchmarks.systems import ENGINE_1, ENGINE_2, LABELS, LOOP, QUIX, start
from dataflows.settings import EngineSettings


@dataclass
class FreshnessOptions:
    rates: tuple[int, ...] = (5_000, 20_000, 50_000)
    seconds: float = 30.0
    """Per level: three ends of the engine's default 10 s epoch, whose recovery snapshot
    sets the engine's p99 (a 15 s level saw one or two, and its p99 depended on where
    they fell)."""
    epoch_interval: float | None = None
    """The engine's ``--epoch-interval`` (None: its default)."""
    burst_base: int = 5_000
    burst_factor: int = 10
    burst_before_s: float = 5.0
    burst_s: float = 5.0
    burst_after_s: float = 15.0
    hot_skus: int = 20
    warmup_s: float = 3.0
    settle_timeout_s: float = 600.0
    skus: int = 100_000
    stores: int = 200
    partitions: int = 4
    seed: int = 43
    systems: tuple[str, ...] = (ENGINE_1, LOOP, QUIX)
    rules: Path = RULES_200_STORES


SMOKE = FreshnessOptions(rates=(500,), seconds=1.0, burst_base=200, burst_before_s=0.5,
                         burst_s=1.0, burst_after_s=0.5, warmup_s=0.3,
                         settle_timeout_s=60.0, skus=1_000, systems=(ENGINE_1, LOOP))


def _workload(options: FreshnessOptions) -> Workload:
    base = retail_workload(skus=options.skus, stores=options.stores, seed=options.seed)
    return dataclasses.replace(base, late_share=0.0, ttl_ms=(2_000, 8_000))


def run_system(system: str, brokers: str, janitor: TopicJanitor, options: FreshnessOptions,
               log: Any) -> dict[str, Any]:
    events_topic = janitor.events_topic(f"{system}.events", options.partitions)
    topics = janitor.run_topics(system, events_topic, options.partitions)
    workload = _workload(options)
    base = workload.events(10**12)
    flash = flash_sale_mix(workload, options.burst_factor, options.hot_skus).events(10**12)
    producer = LiveProducer(load_producer(brokers, linger_ms=1), events_topic)
    consumer = admin_consumer(brokers)
    outputs = [topics.positions, topics.channels, topics.dlq]
    running = start(system, brokers, topics, options.rules, group=janitor.group(system),
                    epoch_interval=options.epoch_interval)
    levels: list[Phase] = []
    burst: list[Phase] = []
    settled: dict[str, float | None] = {}
    try:
        warmup = Phase("warm-up", 200)
        deadline = time.monotonic() + 120
        while sum(end_offsets(consumer, outputs).values()) == 0:
            producer.run(base, 200, 0.25, warmup)
            if time.monotonic() > deadline or not running.alive():
                raise RuntimeError(f"{system} produced no output: {running.log_tail(10)}")
        producer.run(base, 500, options.warmup_s, warmup)

        def settle(name: str) -> None:
            """Wait until the system has handled everything; note how long that took."""
            waited = time.monotonic()
            done = producer.caught_up(brokers, topics.positions, options.settle_timeout_s)
            settled[name] = (time.monotonic() - waited) if done is not None else None

        settle("warm-up")
        for rate in options.rates:
            log(f"  {system}: {rate:,} events/s for {options.seconds:.0f}s")
            phase = producer.run(_take(base, rate * options.seconds), rate, options.seconds,
                                 Phase(f"{rate}/s", rate))
            levels.append(phase)
            settle(phase.name)
        log(f"  {system}: burst {options.burst_base:,} -> "
            f"{options.burst_base * options.burst_factor:,} events/s")
        burst_rate = options.burst_base * options.burst_factor
        plan = [(base, options.burst_base, options.burst_before_s, "before burst"),
                (interleave(base, flash, options.burst_factor), burst_rate, options.burst_s,
                 "burst"),
                (base, options.burst_base, options.burst_after_s, "after burst")]
        prepared = [(_take(source, rate * seconds), rate, seconds, name)
                    for source, rate, seconds, name in plan]
        for events, rate, seconds, name in prepared:
            burst.append(producer.run(events, rate, seconds, Phase(name, rate)))
        producer.confirm()
        settle("burst")
        alive = running.alive()
    finally:
        exit_code = running.stop()
        consumer.close()
    if not alive:
        raise RuntimeError(f"{system} died during the run: {running.log_tail(10)}")
    running.cleanup()
    snapshots = read_snapshots(brokers, topics.positions)
    level_stats = []
    for phase in levels:
        stats = latency_stats(phase, reflect_times(phase, snapshots))
        level_stats.append({"phase": phase.name, "target_rate": phase.target_rate,
                            "achieved_rate": phase.achieved_rate, "produced": phase.produced,
                            "settled": settled[phase.name], **vars(stats)})
    reflected = [reflect_times(phase, snapshots) for phase in burst]
    burst_end = burst[1].ended_ms
    drain_s, never = drain_after(burst, reflected, burst_end)
    last_seen = max((t for seen in reflected for t in seen), default=burst[2].ended_ms)
    xs, ys = lag_series(burst, reflected, burst[0].started_ms,
                        max(burst[2].ended_ms, last_seen) + 2_000)
    burst_latency = latency_stats(_merge(burst), _concat(reflected))
    log(f"  {system}: " + "; ".join(f"{s['phase']} p99 {s['p99_ms']} ms" for s in level_stats)
        + f"; burst drained {drain_s}s after its end")
    return {"system": system, "levels": level_stats, "exit_code": exit_code,
            "snapshots": snapshots.records,
            "burst": {"base_rate": options.burst_base, "burst_rate": burst_rate,
                      "burst_s": options.burst_s, "achieved_burst_rate": burst[1].achieved_rate,
                      "drain_after_burst_s": drain_s, "never_reflected": never,
                      "peak_lag": max(ys) if ys else 0, "settled": settled["burst"],
                      "latency": vars(burst_latency),
                      "lag": {"t_s": xs, "events": ys,
                              "burst_window_s": [(burst[1].started_ms - burst[0].started_ms)
                                                 / 1000, (burst_end - burst[0].started_ms)
                                                 / 1000]}}}


def _take(source: Any, count: float) -> list[Any]:
    """Generate a phase's events before it starts: the driver's CPU goes to producing."""
    return list(itertools.islice(source, int(count)))


def _merge(phases: list[Phase]) -> Phase:
    merged = Phase("all", 0)
    for phase in phases:
        merged.keys += phase.keys
        merged.times += phase.times
    return merged


def _concat(arrays: list[Any]) -> Any:
    out = arrays[0][:0]
    for item in arrays:
        out += item
    return out


def run(brokers: str, options: FreshnessOptions, out_dir: Path, smoke: bool = False,
        log: Any = print) -> ScenarioResult:
    result = ScenarioResult("freshness", smoke, {
        "rates": list(options.rates), "seconds_per_level": options.seconds,
        "burst": f"{options.burst_base}/s -> {options.burst_base * options.burst_factor}/s "
                 f"for {options.burst_s}s on {options.hot_skus} hot SKUs",
        "skus": options.skus, "stores": options.stores, "partitions": options.partitions,
        "systems": list(options.systems),
        "engine_epoch_interval_s": (options.epoch_interval
                                    or EngineSettings.defaults().epoch_interval_s)})
    janitor = TopicJanitor(brokers)
    runs = []
    try:
        for system in options.systems:
            runs.append(run_system(system, brokers, janitor, options, log))
    finally:
        janitor.delete_all()
    result.data["runs"] = runs
    by_system = {r["system"]: r for r in runs}
    loop = by_system.get(LOOP)
    quix = by_system.get(QUIX)
    rows = []
    for r in runs:
        for index, level in enumerate(r["levels"]):
            loop_p99 = loop["levels"][index]["p99_ms"] if loop else None
            quix_p99 = quix["levels"][index]["p99_ms"] if quix else None
            rows.append([LABELS[r["system"]], f"{level['target_rate']:,.0f}",
                         level["achieved_rate"], level["count"], level["p50_ms"],
                         level["p99_ms"], level["p999_ms"], level["max_ms"],
                         level["unmatched"], ratio(level["p99_ms"], loop_p99),
                         ratio(level["p99_ms"], quix_p99),
                         level["settled"] if level["settled"] is not None else "not in time"])
    result.tables.append(Table(
        "Produce-to-snapshot latency at steady rates (ms)",
        ["system", "target events/s", "achieved events/s", "events measured", "p50", "p99",
         "p99.9", "max", "unmatched", "p99 / loop p99", "p99 / Quix p99", "backlog left, s"],
        rows,
        ["latency: broker append time of the first position snapshot reflecting the event "
         "minus its occurred_at (= produce time); 1 ms resolution",
         "a ratio < 1 means fresher than the baseline/peer",
         "unmatched: measured events no snapshot ever reflected (should be 0)",
         "backlog left: seconds after the level ended until the system had handled all of "
         "it (sentinel events, see benchmarks.live); more than a second or two means the "
         "rate is above what the system sustains, and the percentiles grow with the level's "
         "length"]))
    burst_rows = []
    for r in runs:
        b = r["burst"]
        loop_drain = loop["burst"]["drain_after_burst_s"] if loop else None
        burst_rows.append([LABELS[r["system"]], f"{b['base_rate']:,} -> {b['burst_rate']:,}",
                           b["achieved_burst_rate"], b["burst_s"], b["peak_lag"],
                           b["drain_after_burst_s"], ratio(b["drain_after_burst_s"], loop_drain),
                           b["latency"]["p99_ms"], b["latency"]["max_ms"]])
    result.tables.append(Table(
        "10x flash-sale burst: lag drain",
        ["system", "events/s", "achieved burst events/s", "burst s", "peak lag (events)",
         "drain after burst s", "drain / loop drain", "p99 ms (whole phase)", "max ms"],
        burst_rows,
        ["drain after burst: from the end of the burst until every event produced up to "
         "then is reflected on the positions topic"]))
    engine_name = next((name for name in (ENGINE_2, ENGINE_1) if name in by_system), None)
    if engine_name is not None and not smoke:
        engine = by_system[engine_name]
        for rate, goal_ms in ((20_000, 100), (5_000, 50)):
            level = next((lv for lv in engine["levels"] if lv["target_rate"] == rate), None)
            if level is not None and level["p99_ms"] is not None:
                result.targets.append(Target(
                    f"freshness ({LABELS[engine_name]}): p99 <= {goal_ms} ms at a steady "
                    f"{rate // 1000}k events/s",
                    f"p99 {level['p99_ms']:.0f} ms (achieved {level['achieved_rate']:,.0f}/s)",
                    level["p99_ms"] <= goal_ms))
        drained = engine["burst"]["drain_after_burst_s"]
        result.targets.append(Target(
            f"burst ({LABELS[engine_name]}): the 10x backlog gone <= 2 s after the burst",
            "not drained" if drained is None else f"{drained:.1f} s",
            drained is not None and drained <= 2))
    result.data["failed"] = any(
        lv["unmatched"] for r in runs for lv in r["levels"]) and not smoke
    _charts(result, runs, out_dir)
    return result


def _charts(result: ScenarioResult, runs: list[dict[str, Any]], out_dir: Path) -> None:
    figure, axes = new_figure(9, 4.5)
    width = 0.8 / max(1, len(runs))
    colors = ["#1f77b4", "#7f7f7f", "#ff7f0e", "#2ca02c"]
    names: list[str] = []
    for offset, r in enumerate(runs):
        names = [lv["phase"] for lv in r["levels"]]
        xs = [i - 0.4 + width * (offset + 0.5) for i in range(len(names))]
        for marker, key in (("o", "p50_ms"), ("s", "p99_ms"), ("^", "max_ms")):
            axes.scatter(xs, [lv[key] or 0 for lv in r["levels"]], marker=marker,
                         color=colors[offset % len(colors)],
                         label=f"{r['system']} {key.split('_')[0]}")
    axes.set_xticks(range(len(names)), names)
    axes.set_yscale("log")
    axes.axhline(100, color="red", linestyle=":", linewidth=1)
    axes.set_ylabel("produce-to-snapshot latency, ms (log)")
    axes.set_title("Freshness at steady rates: p50 (o), p99 (s), max (^); red: 100 ms")
    axes.legend(fontsize=7, ncol=max(1, len(runs)))
    save_figure(figure, out_dir, "freshness-latency.png", result)

    figure, axes = new_figure(9, 4.5)
    for r in runs:
        lag = r["burst"]["lag"]
        axes.plot(lag["t_s"], lag["events"], label=r["system"])
    if runs:
        start_s, end_s = runs[0]["burst"]["lag"]["burst_window_s"]
        axes.axvspan(start_s, end_s, color="orange", alpha=0.2, label="10x burst")
    axes.set_xlabel("seconds")
    axes.set_ylabel("events produced, not yet on the topic")
    axes.set_title("Lag over time around a 10x flash-sale burst")
    axes.legend(fontsize=8)
    save_figure(figure, out_dir, "freshness-burst-lag.png", result)

