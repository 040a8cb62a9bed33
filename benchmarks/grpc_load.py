"""Scenario grpc: read latency and batch throughput of an `availability api` replica.

    python -m benchmarks grpc [--rates 500,1000,2000] [--concurrency 1,16,64] [--smoke]

Data: the retail chain's channel snapshots as the engine would publish them: every
one of the 100k SKUs counted at the 3 DCs and at a popularity-dependent number of
stores (the best sellers in all 200, the tail in one), 200k workload events on top,
folded in process with the pure domain and published once per key to a fresh
channels topic (web pools up to 70 locations, so popular answers are ~1 KB).

Servers, one at a time, each a process of its own, both grpc.aio:

* the replica: ``availability api`` tailing that topic into RocksDB (SERVING once
  caught up);
* the floor: benchmarks.grpc_baseline, the same answers from a Python dict.

Measured by a load generator on the same 2 cores as the server: by default the Go
program in ``benchmarks/loadgen`` (grpc-go, one connection, built on first use; see
``benchmarks/loadgen_client.py``), or with ``--client python`` grpcio in this process
(the figures then include a Python client's own CPU and GIL stalls next to the server):

* single GetAvailability on channel web, SKUs drawn by Zipf popularity, open loop at
  fixed rates: each request is sent at its scheduled time without waiting for the
  previous answers (as independent web requests arrive); latency from the *scheduled*
  time, so any stall counts for every request it delays (no coordinated omission),
  p50/p99/p99.9/max from an HDR histogram; also the round trip from the actual send;
* BatchGetAvailability of 100 SKUs (a listing page, uniform over the catalogue),
  closed loop with 1, 16 and 64 calls in flight: SKU lookups/s, and per second of
  server CPU (what the server could do with a core of its own).

The pacing loop without any call is measured too: the client machine's own jitter.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from hdrh.histogram import HdrHistogram

from availability.processes import stop_process
from availability.retail_day import retail_workload
from availability_api.client import ApiError, AvailabilityClient
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.generated.availability.v1 import availability_pb2_grpc as pb_grpc
from availability_contracts.codec import Codec
from availability_contracts.schemas import CHANNEL_SCHEMA
from availability_domain.events import EventType, InventoryEvent
from availability_domain.inventory import SkuInventory
from availability_domain.rules import load_rules
from availability_domain.snapshots import SnapshotPublisher
from benchmarks.kafka_util import Delivery, TopicJanitor, load_producer
from benchmarks.loadgen_client import loadgen_binary, run_loadgen
from benchmarks.report import ScenarioResult, Table, Target, new_figure, ratio, save_figure
from benchmarks.rules import RULES_200_STORES

CHANNEL = "web"
REPLICA = "replica"
FLOOR = "floor"
LABELS = {REPLICA: "availability api replica (RocksDB + answers in memory)",
          FLOOR: "bare grpc.aio server, dict of frames (floor)"}


@dataclass
class GrpcOptions:
    rates: tuple[float, ...] = (500.0, 1_000.0, 2_000.0)
    concurrency: tuple[int, ...] = (1, 16, 64)
    seconds: float = 10.0
    batch: int = 100
    skus: int = 100_000
    stores: int = 200
    events: int = 200_000
    seed: int = 44
    rules: Path = RULES_200_STORES
    client: str = "go"
    """Load generator: "go" (benchmarks/loadgen, compiled) or "python" (grpcio)."""


CLIENTS = ("go", "python")
CLIENT_NOTES = {
    "go": "load generator: benchmarks/loadgen (Go, grpc-go, one connection), a process of "
          "its own",
    "python": "load generator: grpcio in the benchmark process (one channel), which needs "
              "about as much CPU per call as the server it measures",
}
SMOKE = GrpcOptions(rates=(200.0,), concurrency=(1, 4), seconds=0.5, skus=1_000, events=2_000)


def publish_snapshots(brokers: str, topic: str, options: GrpcOptions) -> dict[str, Any]:
    """Fold opening stock + workload in process; publish the latest channel snapshots."""
    started = time.perf_counter()
    rules = load_rules(options.rules)
    now = time.time_ns() // 1_000_000
    workload = retail_workload(skus=options.skus, stores=options.stores, seed=options.seed,
                               start_ms=now - 3_600_000, expiring=False)
    dcs = workload.locations[:3]
    stores = workload.locations[3:]
    rng = random.Random(options.seed)
    inventories: dict[str, SkuInventory] = {}
    for rank, sku in enumerate(workload.sku_ids):
        inventory = inventories[sku] = SkuInventory(sku)
        stocked = max(1, int(len(stores) / (1 + rank / 20)))
        for index, location in enumerate(dcs + stores[:stocked]):
            inventory.apply_event(InventoryEvent(
                f"open-{sku}-{index}", EventType.COUNT, now - 7_200_000, "erp", sku, location,
                rng.randint(0, 80)), now)
    for event in workload.events(options.events):
        inventories[event.sku].apply_event(event, now)
    codec = Codec()
    producer = load_producer(brokers)
    delivery = Delivery()
    sent = 0
    for inventory in inventories.values():
        _, channels = SnapshotPublisher().publish(inventory, list(inventory.positions), rules,
                                                  now, now)
        for snap in channels:
            producer.produce(topic, codec.encode(CHANNEL_SCHEMA, snap.to_record(), topic),
                             snap.key, on_delivery=delivery)
            sent += 1
            if sent % 1000 == 0:
                producer.poll(0)
    delivery.check(producer, sent)
    positions = sum(len(inventory.positions) for inventory in inventories.values())
    return {"channel_snapshots": sent, "positions": positions,
            "load_s": time.perf_counter() - started}


def start_server(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server that logs 'listening on HOST:PORT'; its target."""
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, start_new_session=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert process.stderr is not None
    for line in process.stderr:
        if match := re.search(r"listening on [^ ]+:(\d+)", line):
            # keep draining the log so the server never blocks on a full pipe
            threading.Thread(target=deque, args=(process.stderr, 0), daemon=True).start()
            return process, f"127.0.0.1:{match.group(1)}"
    raise RuntimeError(f"server exited with {process.wait()} before listening")


def stop_server(process: subprocess.Popen[str]) -> None:
    stop_process(process)


def wait_serving(target: str, timeout: float = 600) -> float:
    client = AvailabilityClient(target)
    started = time.perf_counter()
    try:
        while True:
            try:
                if client.health(timeout=1) == "SERVING":
                    return time.perf_counter() - started
            except ApiError:
                pass  # not listening yet
            if time.perf_counter() - started > timeout:
                raise RuntimeError("replica not SERVING in time")
            time.sleep(0.05)
    finally:
        client.close()


def pace(n: int, start: float, interval: float) -> float:
    """Sleep until request ``n``'s scheduled time; return that time.

    Sleep, not spin: the completions are recorded by gRPC's callback thread, which a
    spinning loop would keep off the GIL for a switch interval (5 ms).
    """
    scheduled = start + n * interval
    ahead = scheduled - time.perf_counter()
    if ahead > 0:
        time.sleep(ahead)
    return scheduled


def histogram_ms(values_us: list[int]) -> dict[str, float]:
    """p50/p99/p99.9/max in ms from microsecond samples (HDR, 3 significant digits)."""
    histogram = HdrHistogram(1, 60_000_000, 3)
    for value in values_us:
        histogram.record_value(max(1, value))
    return {"p50_ms": histogram.get_value_at_percentile(50) / 1000,
            "p99_ms": histogram.get_value_at_percentile(99) / 1000,
            "p999_ms": histogram.get_value_at_percentile(99.9) / 1000,
            "max_ms": histogram.get_max_value() / 1000,
            "count": histogram.get_total_count()}


def paced_baseline(rate: float, seconds: float) -> dict[str, float]:
    """The pacing loop with no call: this machine's own scheduling jitter."""
    interval, start = 1.0 / rate, time.perf_counter() + 0.01
    lateness = []
    for n in range(int(rate * seconds)):
        scheduled = pace(n, start, interval)
        sum(range(1000))  # about the client's own work per request
        lateness.append(int((time.perf_counter() - scheduled) * 1e6))
    return histogram_ms(lateness)


def zipf_skus(skus: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(skus))))
    total = cumulative[-1]
    return [skus[bisect(cumulative, rng.random() * total)] for _ in range(count)]


def get_requests(skus: list[str], rate: float, seconds: float
                 ) -> list[pb.GetAvailabilityRequest]:
    """One level's single Gets: SKUs by Zipf popularity, the same for either client."""
    return [pb.GetAvailabilityRequest(channel=CHANNEL, sku=sku)
            for sku in zipf_skus(skus, max(1, int(rate * seconds)), int(rate))]


def batch_requests(skus: list[str], batch: int) -> list[pb.BatchGetAvailabilityRequest]:
    """256 listing pages of ``batch`` SKUs, uniform over the catalogue, sent in turn."""
    rng = random.Random(2)
    return [pb.BatchGetAvailabilityRequest(channel=CHANNEL,
                                           skus=[rng.choice(skus) for _ in range(batch)])
            for _ in range(256)]


def paced_gets(stub: pb_grpc.AvailabilityServiceStub, skus: list[str], rate: float,
               seconds: float) -> dict[str, Any]:
    """Open-loop single Gets at ``rate``/s: latency from schedule and bare round trip.

    Each request is sent at its scheduled time without waiting for earlier answers
    (futures; completion stamped by a callback), as independent web requests would be,
    so the figures are the server's and not a single client's queue.
    """
    requests = get_requests(skus, rate, seconds)
    interval, start = 1.0 / rate, time.perf_counter() + 0.01
    sent = [0.0] * len(requests)
    done = [0.0] * len(requests)

    def finished(index: int, future: grpc.Future) -> None:
        done[index] = time.perf_counter()

    futures = []
    for n, request in enumerate(requests):
        pace(n, start, interval)
        sent[n] = time.perf_counter()
        future = stub.GetAvailability.future(request, timeout=10.0)
        future.add_done_callback(functools.partial(finished, n))
        futures.append(future)
    failures: Counter[str] = Counter()
    found = 0
    answered = []
    for n, future in enumerate(futures):
        error = future.exception()
        if error is None:
            found += future.result().availability.found
            answered.append(n)
        else:  # an overloaded server's refusals are a result, not a crash of the run
            code = error.code().name if isinstance(error, grpc.Call) else None
            failures[code or type(error).__name__] += 1
    elapsed = max(done) - start
    from_schedule = [int((done[n] - (start + n * interval)) * 1e6) for n in answered]
    round_trip = [int((done[n] - sent[n]) * 1e6) for n in answered]
    return {"rate": rate, "achieved_rate": len(answered) / elapsed, "found": found,
            "failed": sum(failures.values()), "failures": dict(failures),
            "from_schedule": histogram_ms(from_schedule),
            "round_trip": histogram_ms(round_trip)}


def go_paced_gets(target: str, skus: list[str], rate: float, seconds: float
                  ) -> dict[str, Any]:
    """:func:`paced_gets` with the compiled load generator: same schedule, same figures."""
    requests = [request.SerializeToString() for request in get_requests(skus, rate, seconds)]
    report = run_loadgen(target, "GetAvailability", requests, seconds, rate=rate)
    failures = report["failures"]
    return {"rate": rate, "achieved_rate": report["answered"] / report["elapsed_s"],
            "found": report["found"], "failed": sum(failures.values()), "failures": failures,
            "from_schedule": histogram_ms(report["from_schedule_us"]),
            "round_trip": histogram_ms(report["round_trip_us"])}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_throughput(stub: pb_grpc.AvailabilityServiceStub, server_pid: int, skus: list[str],
                     batch: int, in_flight: int, seconds: float) -> dict[str, Any]:
    """Closed loop with ``in_flight`` calls outstanding (requests built beforehand)."""
    requests = batch_requests(skus, batch)
    pending: deque[tuple[float, grpc.Future]] = deque()
    calls = 0
    latencies: list[int] = []
    cpu_before = cpu_seconds(server_pid)
    started = time.perf_counter()
    end = started + seconds
    issued = 0
    while time.perf_counter() < end or pending:
        while len(pending) < in_flight and time.perf_counter() < end:
            pending.append((time.perf_counter(), stub.BatchGetAvailability.future(
                requests[issued % 256], timeout=10.0)))
            issued += 1
        sent, future = pending.popleft()
        response = future.result()
        latencies.append(int((time.perf_counter() - sent) * 1e6))
        if len(response.results) != batch:
            raise RuntimeError(f"BatchGet answered {len(response.results)} of {batch}")
        calls += 1
    elapsed = time.perf_counter() - started
    server_cpu = cpu_seconds(server_pid) - cpu_before
    return {"in_flight": in_flight, "calls": calls, "lookups_per_s": calls * batch / elapsed,
            "lookups_per_server_cpu_s": calls * batch / server_cpu if server_cpu else None,
            "server_cpu_share": server_cpu / elapsed, "latency": histogram_ms(latencies)}


def go_batch_throughput(target: str, server_pid: int, skus: list[str], batch: int,
                        in_flight: int, seconds: float) -> dict[str, Any]:
    """:func:`batch_throughput` with the compiled load generator."""
    requests = [request.SerializeToString() for request in batch_requests(skus, batch)]
    cpu_before = cpu_seconds(server_pid)
    report = run_loadgen(target, "BatchGetAvailability", requests, seconds, in_flight=in_flight)
    server_cpu = cpu_seconds(server_pid) - cpu_before
    if report["failures"]:
        raise RuntimeError(f"BatchGet calls failed: {report['failures']}")
    wrong = {n: calls for n, calls in report["results_per_answer"].items() if n != batch}
    if wrong:
        raise RuntimeError(f"BatchGet answered other than {batch} results: {wrong}")
    calls, elapsed = report["answered"], report["elapsed_s"]
    return {"in_flight": in_flight, "calls": calls, "lookups_per_s": calls * batch / elapsed,
            "lookups_per_server_cpu_s": calls * batch / server_cpu if server_cpu else None,
            "server_cpu_share": server_cpu / elapsed,
            "latency": histogram_ms(report["round_trip_us"])}


@contextlib.contextmanager
def no_client_gc() -> Iterator[None]:
    """No garbage collection in the load generator while it measures.

    The driver holds large lists (SKUs, prepared requests); a full collection of them
    takes tens of milliseconds and would show up as the server's tail latency.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def measure(server: str, process: subprocess.Popen[str], target: str, skus: list[str],
            options: GrpcOptions, log: Any) -> dict[str, Any]:
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.AvailabilityServiceStub(channel)
    go = options.client == "go"
    try:
        paced_gets(stub, skus, 500, min(1.0, options.seconds))  # warm-up
        gets = []
        for rate in options.rates:
            cpu_before = cpu_seconds(process.pid)
            with no_client_gc():
                gets.append(go_paced_gets(target, skus, rate, options.seconds) if go
                            else paced_gets(stub, skus, rate, options.seconds))
            answered = gets[-1]["from_schedule"]["count"]
            gets[-1]["server_cpu_us_per_call"] = (
                (cpu_seconds(process.pid) - cpu_before) / answered * 1e6 if answered else None)
            log(f"  {server}: Get @ {rate:,.0f}/s p99 "
                f"{gets[-1]['from_schedule']['p99_ms']:.3f} ms, "
                f"{gets[-1]['server_cpu_us_per_call'] or 0:.0f} us of server CPU per call")
        batches = []
        for in_flight in options.concurrency:
            with no_client_gc():
                batches.append(
                    go_batch_throughput(target, process.pid, skus, options.batch, in_flight,
                                        options.seconds) if go
                    else batch_throughput(stub, process.pid, skus, options.batch, in_flight,
                                          options.seconds))
            log(f"  {server}: BatchGet({options.batch}) x{in_flight} in flight: "
                f"{batches[-1]['lookups_per_s']:,.0f} lookups/s")
    finally:
        channel.close()
    return {"server": server, "gets": gets, "batches": batches}


def run(brokers: str, options: GrpcOptions, out_dir: Path, smoke: bool = False,
        log: Any = print) -> ScenarioResult:
    result = ScenarioResult("grpc", smoke, {
        "rates": list(options.rates), "concurrency": list(options.concurrency),
        "seconds": options.seconds, "batch": options.batch, "skus": options.skus,
        "channel": CHANNEL, "client": options.client})
    if options.client not in CLIENTS:
        raise ValueError(f"--client {options.client!r}: choose one of {', '.join(CLIENTS)}")
    if options.client == "go":
        log(f"grpc: load generator {loadgen_binary()}")
    janitor = TopicJanitor(brokers)
    runs: list[dict[str, Any]] = []
    skus = retail_workload(skus=options.skus).sku_ids
    try:
        topics = janitor.run_topics("grpc", janitor.events_topic("grpc.events"))
        log(f"grpc: folding and publishing the snapshots of {options.skus:,} SKUs ...")
        loaded = publish_snapshots(brokers, topics.channels, options)
        result.data["load"] = loaded
        log(f"grpc: {loaded['channel_snapshots']:,} channel snapshots in "
            f"{loaded['load_s']:.1f}s")
        with tempfile.TemporaryDirectory(prefix="bench-grpc-") as data_dir:
            process, target = start_server([
                sys.executable, "-m", "availability", "api", "--data-dir", data_dir,
                "--host", "127.0.0.1", "--port", "0", "--brokers", brokers,
                "--positions-topic", topics.positions, "--channels-topic", topics.channels,
                "--events-topic", topics.events, "--dlq-topic", topics.dlq,
                "--metrics-port", "0", "--http-port", "0", "--drain-seconds", "0"])
            try:
                loaded["replica_catch_up_s"] = wait_serving(target)
                log(f"grpc: replica SERVING after {loaded['replica_catch_up_s']:.1f}s")
                runs.append(measure(REPLICA, process, target, skus, options, log))
            finally:
                stop_server(process)
        process, target = start_server([sys.executable, "-m", "benchmarks.grpc_baseline",
                                        "--brokers", brokers, "--channels-topic",
                                        topics.channels])
        try:
            runs.append(measure(FLOOR, process, target, skus, options, log))
        finally:
            stop_server(process)
        jitter = []
        if options.client == "python":
            for rate in options.rates:
                with no_client_gc():
                    jitter.append(paced_baseline(rate, options.seconds))
    finally:
        janitor.delete_all()
    result.data["runs"] = runs
    result.data["pacing_jitter"] = jitter
    _tables(result, runs, jitter, options, smoke)
    _charts(result, runs, options, out_dir)
    return result


def _tables(result: ScenarioResult, runs: list[dict[str, Any]], jitter: list[dict[str, Any]],
            options: GrpcOptions, smoke: bool) -> None:
    floor = next(r for r in runs if r["server"] == FLOOR)
    rows = []
    for r in runs:
        for get, floor_get in zip(r["gets"], floor["gets"], strict=True):
            s, rt = get["from_schedule"], get["round_trip"]
            rows.append([LABELS[r["server"]], f"{get['rate']:,.0f}", get["achieved_rate"],
                         s["count"], get.get("failed", 0), s["p50_ms"], s["p99_ms"],
                         s["p999_ms"], s["max_ms"],
                         rt["p50_ms"], rt["p99_ms"], get.get("server_cpu_us_per_call"),
                         ratio(s["p99_ms"], floor_get["from_schedule"]["p99_ms"])])
    for rate, j in zip(options.rates, jitter, strict=False):
        rows.append(["pacing loop alone, no call (client jitter)", f"{rate:,.0f}", None,
                     j["count"], None, j["p50_ms"], j["p99_ms"], j["p999_ms"], j["max_ms"], None,
                     None, None, None])
    result.tables.append(Table(
        "GetAvailability (channel web, Zipf SKUs), open loop at fixed rates (ms)",
        ["server", "requests/s", "achieved/s", "answered", "failed", "p50", "p99", "p99.9", "max",
         "round trip p50", "round trip p99", "server CPU us per call", "p99 / floor p99"],
        rows,
        ["p50..max measured from each request's scheduled send time (queueing included)",
         CLIENT_NOTES[options.client]]))
    rows = []
    for r in runs:
        for batch, floor_batch in zip(r["batches"], floor["batches"], strict=True):
            rows.append([LABELS[r["server"]], batch["in_flight"], batch["calls"],
                         batch["lookups_per_s"],
                         ratio(batch["lookups_per_s"], floor_batch["lookups_per_s"]),
                         batch["latency"]["p50_ms"], batch["latency"]["p99_ms"],
                         batch["lookups_per_server_cpu_s"], batch["server_cpu_share"]])
    result.tables.append(Table(
        f"BatchGetAvailability({options.batch} SKUs, uniform), closed loop",
        ["server", "in flight", "calls", "SKU lookups/s", "vs floor", "call p50 ms",
         "call p99 ms", "lookups per server CPU-s", "server CPU share"], rows,
        ["client and server share the 2 cores; 'lookups per server CPU-s' is what the "
         "server would do with a core to itself", CLIENT_NOTES[options.client]]))
    replica = next(r for r in runs if r["server"] == REPLICA)
    if smoke:
        return
    for goal_rate in (1000, 2000):
        at_rate = next((g for g in replica["gets"] if g["rate"] == goal_rate), None)
        if at_rate is not None:
            p99 = at_rate["from_schedule"]["p99_ms"]
            failed = at_rate.get("failed", 0)
            result.targets.append(Target(
                f"gRPC: single-SKU p99 <= 2 ms at {goal_rate // 1000}k requests/s",
                f"p99 {p99:.2f} ms, {failed} failed", p99 <= 2 and not failed))
    ratios = [b["lookups_per_s"] / f["lookups_per_s"]
              for b, f in zip(replica["batches"], floor["batches"], strict=True)]
    ratios += [f["from_schedule"]["p99_ms"] / g["from_schedule"]["p99_ms"]
               for g, f in zip(replica["gets"], floor["gets"], strict=True)
               if g["from_schedule"]["p99_ms"]]
    if ratios:
        result.targets.append(Target(
            "reads: the replica >= 0.9x the bare grpc.aio floor at every level (BatchGet "
            "lookups/s; Get: floor p99 / replica p99)",
            f"lowest {min(ratios):.2f}x", min(ratios) >= 0.9))
    best = max(replica["batches"], key=lambda b: b["lookups_per_s"])
    result.targets.append(Target(
        "gRPC: >= 100k SKU lookups/s through BatchGetAvailability",
        f"{best['lookups_per_s']:,.0f}/s at {best['in_flight']} in flight "
        f"({best['lookups_per_server_cpu_s'] or 0:,.0f} per server CPU-s)",
        best["lookups_per_s"] >= 100_000))


def _charts(result: ScenarioResult, runs: list[dict[str, Any]], options: GrpcOptions,
            out_dir: Path) -> None:
    figure, axes = new_figure()
    for r in runs:
        rates = [g["rate"] for g in r["gets"]]
        for key, style in (("p50_ms", "o--"), ("p99_ms", "s-"), ("max_ms", "^:")):
            axes.plot(rates, [g["from_schedule"][key] for g in r["gets"]], style,
                      label=f"{r['server']} {key.split('_')[0]}")
    axes.axhline(2, color="red", linestyle=":", linewidth=1)
    axes.set_yscale("log")
    axes.set_xlabel("GetAvailability requests/s")
    axes.set_ylabel("latency from schedule, ms (log)")
    axes.set_title("Single-SKU Get latency (red: 2 ms p99 target)")
    axes.legend(fontsize=7)
    save_figure(figure, out_dir, "grpc-get-latency.png", result)

    figure, axes = new_figure()
    width = 0.8 / max(1, len(runs))
    for offset, r in enumerate(runs):
        positions = [i + offset * width for i in range(len(r["batches"]))]
        bars = axes.bar(positions, [b["lookups_per_s"] for b in r["batches"]], width,
                        label=LABELS[r["server"]])
        axes.bar_label(bars, labels=[f"{b['lookups_per_s']:,.0f}" for b in r["batches"]],
                       fontsize=7)
    axes.set_xticks([i + width / 2 for i in range(len(options.concurrency))],
                    [f"{n} in flight" for n in options.concurrency])
    axes.axhline(100_000, color="red", linestyle=":", linewidth=1)
    axes.set_ylabel(f"SKU lookups/s (BatchGet of {options.batch})")
    axes.set_title("BatchGetAvailability throughput (red: 100k/s target)")
    axes.legend(fontsize=7)
    save_figure(figure, out_dir, "grpc-batch-throughput.png", result)
