"""Backlog drain: pre-load N events, run the engine, time until every snapshot is out.

    python -m benchmarks.drain --events 1000000 --processes 1 2

Prints one row per engine run plus the in-process pure fold (no Kafka) on the same
events as a reference, with ratios. The engine is done when its output topics stop
growing; its drain time runs from launch to the newest output record's timestamp.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from availability.codec import Codec
from availability.delivery import ConfirmedProducer
from availability.topics import TopicNames, create_topics
from benchmarks.workload import Workload
from dataflows.domain.events import InventoryEvent
from dataflows.domain.inventory import SkuInventory
from dataflows.domain.rules import load_rules
from dataflows.domain.snapshots import SnapshotPublisher

REPO = Path(__file__).resolve().parents[1]


def output_state(brokers: str, topics: list[str]) -> tuple[int, int]:
    """(total records, newest record timestamp ms) across the output topics."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"drain-{uuid.uuid4()}"})
    total, newest = 0, 0
    try:
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
                total += high - low
                if high > low:
                    consumer.assign([TopicPartition(topic, partition, high - 1)])
                    message = consumer.consume(1, 5)
                    if message:
                        newest = max(newest, message[0].timestamp()[1])
    finally:
        consumer.close()
    return total, newest


def run_engine(brokers: str, topics: TopicNames, rules: Path, processes: int,
               quiet_s: float) -> tuple[float, int]:
    recovery = Path(tempfile.mkdtemp(prefix="drain-recovery-"))
    argv = [sys.executable, "-m", "availability", "engine", "--brokers", brokers,
            "--rules", str(rules), "--recovery-dir", str(recovery),
            "--processes", str(processes), "--events-topic", topics.events,
            "--dlq-topic", topics.dlq, "--positions-topic", topics.positions,
            "--channels-topic", topics.channels]
    launched = time.time()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    outputs = [topics.positions, topics.channels, topics.dlq]
    last_total, stable_since = -1, time.monotonic()
    try:
        while True:
            time.sleep(0.5)
            total, newest = output_state(brokers, outputs)
            if total != last_total or total == 0:
                last_total, stable_since = total, time.monotonic()
            elif time.monotonic() - stable_since > quiet_s:
                return newest / 1000 - launched, total
            if process.poll() is not None:
                raise RuntimeError(f"engine exited with {process.returncode}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)


def fold_in_process(events: list[InventoryEvent], rules_path: Path) -> float:
    rules = load_rules(rules_path)
    inventories: dict[str, SkuInventory] = {}
    publishers: dict[str, SnapshotPublisher] = {}
    started = time.perf_counter()
    for event in events:
        inventory = inventories.get(event.sku)
        if inventory is None:
            inventory = inventories[event.sku] = SkuInventory(event.sku)
            publishers[event.sku] = SnapshotPublisher()
        outcome = inventory.apply_event(event, 0)
        if outcome.status == "applied":
            publishers[event.sku].publish(inventory, outcome.touched, rules, 0, 0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default=os.environ.get("AVAILABILITY_BROKERS",
                                                            "127.0.0.1:9092"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rules", type=Path, default=REPO / "examples" / "rules.toml")
    parser.add_argument("--quiet-seconds", type=float, default=4.0,
                        help="output must stop growing this long to count as drained")
    args = parser.parse_args()

    codec = Codec()
    events = list(Workload(skus=args.skus, seed=1).events(args.events))
    rows: list[tuple[str, float, str]] = []
    fold_s = fold_in_process(events, args.rules)
    rows.append(("pure fold, in process, no Kafka", fold_s, ""))
    for processes in args.processes:
        suffix = uuid.uuid4().hex[:8]
        topics = TopicNames(f"drain-{suffix}.events", f"drain-{suffix}.dlq",
                            f"drain-{suffix}.positions", f"drain-{suffix}.channels")
        create_topics(args.brokers, topics, partitions=4)
        producer = ConfirmedProducer(args.brokers)
        started = time.perf_counter()
        for event in events:
            producer.produce(topics.events, codec.encode_event(event, topics.events),
                             event.position_key)
        producer.confirm(300)
        preload_s = time.perf_counter() - started
        seconds, outputs = run_engine(args.brokers, topics, args.rules, processes,
                                      args.quiet_seconds)
        rows.append((f"engine, {processes} process(es)", seconds,
                     f"{outputs} snapshot records; preload {preload_s:.1f}s"))

    base = rows[0][1]
    print(f"\n{args.events} events, {args.skus} SKUs, machine: {os.cpu_count()} cores")
    print(f"{'run':<36} {'seconds':>8} {'events/s':>10} {'vs fold':>8}  notes")
    for name, seconds, notes in rows:
        print(f"{name:<36} {seconds:>8.1f} {args.events / seconds:>10,.0f} "
              f"{base / seconds:>8.2f}  {notes}")


if __name__ == "__main__":
    main()
