"""`availability demo`: the whole engine on a replayed retail day, watched live.

Starts what is missing (local Kafka, topics), runs the engine as a 2-process Bytewax
cluster, opening stock as COUNTs, then a day of store sales, web reservations,
receipts, transfers and returns at ``--rate`` events/s with a flash sale (10x on a few
hot SKUs) in the middle third. A live view shows the produce rate, produce-to-snapshot
freshness, dead letters and the hot SKUs' channel numbers. Ctrl-C stops everything it
started.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from availability.processes import stop_process
from availability.retail_day import Workload
from availability_contracts.codec import Codec
from availability_contracts.keys import channel_key
from availability_contracts.schemas import CHANNEL_SCHEMA
from availability_contracts.topics import ConfigOverride, TopicNames
from availability_domain.events import EventType, InventoryEvent
from availability_domain.rules import load_rules
from availability_kafka.admin import create_topics
from availability_kafka.config import KafkaConnection, load_kafka_config
from availability_kafka.delivery import ConfirmedProducer

HOT_SKUS = 4
CHANNEL_COLUMNS = ("web", "amazon", "walmart")


@dataclass
class DemoSettings:
    brokers: str
    rules: Path
    state_dir: Path
    duration_s: float = 60.0
    rate: float = 500.0
    processes: int = 2
    skus: int = 5_000
    api_port: int = 50051
    topics: TopicNames = field(default_factory=TopicNames)
    kafka_config: Path | None = None
    api_metrics_port: int = 9190
    http_port: int = 8080
    engine_metrics_port: int = 9108
    linger_s: float = 0.0
    """After the replay, how long the engine and the API stay up for questions."""
    local_kafka: bool = True
    started_kafka: bool = False
    """True when this demo started the local broker (it is left running)."""

    def connection_args(self) -> list[str]:
        """--brokers, the topics and --kafka-config, for the commands the demo starts."""
        topics = self.topics
        argv = ["--brokers", self.brokers, "--events-topic", topics.events,
                "--dlq-topic", topics.dlq, "--positions-topic", topics.positions,
                "--channels-topic", topics.channels]
        if self.kafka_config is not None:
            argv += ["--kafka-config", str(self.kafka_config)]
        return argv

    def connection(self) -> KafkaConnection:
        return load_kafka_config(self.kafka_config, self.brokers)


@dataclass
class LiveStats:
    """What the snapshot watcher has seen so far; read by the live view."""

    channels: dict[str, int] = field(default_factory=dict)
    freshness_ms: deque[int] = field(default_factory=lambda: deque(maxlen=2000))
    snapshots: int = 0
    dead_letters: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def percentile(self, share: float) -> int | None:
        with self.lock:
            samples = sorted(self.freshness_ms)
        if not samples:
            return None
        return samples[min(len(samples) - 1, int(share * len(samples)))]


def watch_snapshots(settings: DemoSettings, stats: LiveStats, stop: threading.Event) -> None:
    """Tail the channel and DLQ topics from their current end."""
    codec = Codec()
    consumer = Consumer(settings.connection().client() | {
        "group.id": f"availability-demo-{uuid.uuid4()}", "enable.auto.commit": False})
    topics = [settings.topics.channels, settings.topics.dlq]
    assignment = []
    for topic in topics:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assignment += [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    consumer.assign(assignment)
    try:
        while not stop.is_set():
            for message in consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                if message.topic() == settings.topics.dlq:
                    stats.dead_letters += 1
                    continue
                record = codec.decode(CHANNEL_SCHEMA, message.value())
                # the snapshot's own Kafka timestamp (set when the engine produced it), not
                # our receive time, which would add this consumer's polling delay
                produced = message.timestamp()[1]
                with stats.lock:
                    stats.snapshots += 1
                    stats.channels[message.key().decode()] = record["ats"]
                    stats.freshness_ms.append(max(0, produced - record["as_of"]))
    finally:
        consumer.close()


def retail_day(settings: DemoSettings) -> Iterator[tuple[float, list[InventoryEvent]]]:
    """(share of the day elapsed, events due now), live timestamps; a flash sale in the
    middle third adds nine events on the hot SKUs to every regular one (10x)."""
    locations = list(load_rules(settings.rules).locations)
    dcs = [loc for loc in locations if loc.startswith("DC")]
    stores = [loc for loc in locations if not loc.startswith("DC")]
    run = uuid.uuid4().hex[:6]
    day = Workload(skus=settings.skus, dcs=len(dcs), stores=len(stores),
                   seed=int(time.time())).events(10**12)
    rush = Workload(skus=HOT_SKUS, dcs=len(dcs), stores=len(stores), seed=int(run, 16),
                    duplicate_share=0.0, flash_sale=True).events(10**12)
    names = dict(zip(Workload(dcs=len(dcs), stores=len(stores)).locations, dcs + stores,
                     strict=True))

    def live(event: InventoryEvent, tag: str) -> InventoryEvent:
        return event._replace(
            event_id=f"demo-{run}-{tag}-{event.event_id}",
            occurred_at=int(time.time() * 1000),
            location_id=names[event.location_id],
            counterparty_location_id=names.get(event.counterparty_location_id or ""),
            transfer_id=event.transfer_id and f"{run}-{tag}-{event.transfer_id}",
            reservation_id=event.reservation_id and f"{run}-{tag}-{event.reservation_id}",
        )

    started = time.monotonic()
    while (share := (time.monotonic() - started) / settings.duration_s) < 1:
        due = [live(next(day), "d")]
        if 1 / 3 <= share < 2 / 3:
            due += [live(next(rush), "f") for _ in range(9)]
        yield share, due


def opening_stock(settings: DemoSettings) -> list[InventoryEvent]:
    """COUNTs for the hot SKUs everywhere, so the numbers start from a real shelf."""
    now = int(time.time() * 1000) - 1
    events = []
    for sku_index, location in itertools.product(range(HOT_SKUS),
                                                 load_rules(settings.rules).locations):
        quantity = 400 if location.startswith("DC") else 25
        events.append(InventoryEvent(f"demo-open-{uuid.uuid4().hex}", EventType.COUNT, now,
                                     "erp", f"SKU-{sku_index:06d}", location, quantity))
    return events


def render(stats: LiveStats, produced: int, rate: float, share: float) -> Group:
    phase = "FLASH SALE (10x on hot SKUs)" if 1 / 3 <= share < 2 / 3 else "regular trading"
    p50, p99 = stats.percentile(0.5), stats.percentile(0.99)
    summary = Table.grid(padding=(0, 3))
    summary.add_row(
        f"day {share:5.0%}  [bold]{phase}[/bold]",
        f"events produced {produced:,} ({rate:,.0f}/s)",
        f"channel snapshots {stats.snapshots:,}",
        f"freshness p50 {p50 if p50 is not None else '-'} ms / p99 "
        f"{p99 if p99 is not None else '-'} ms",
        f"DLQ {stats.dead_letters}",
    )
    table = Table(title="hot SKUs: available to sell per channel")
    table.add_column("sku")
    for column in (*CHANNEL_COLUMNS, "pickup S001"):
        table.add_column(column, justify="right")
    with stats.lock:
        for index in range(HOT_SKUS):
            sku = f"SKU-{index:06d}"
            cells = [str(stats.channels.get(channel_key(name, sku), "-"))
                     for name in CHANNEL_COLUMNS]
            cells.append(str(stats.channels.get(channel_key("pickup", sku, "S001"), "-")))
            table.add_row(sku, *cells)
    return Group(summary, table)


def start_engine(settings: DemoSettings, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "availability", "engine", *settings.connection_args(),
            "--rules", str(settings.rules), "--recovery-dir",
            str(settings.state_dir / "recovery"), "--processes", str(settings.processes),
            "--epoch-interval", "2", "--metrics-port", str(settings.engine_metrics_port)]
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def start_api(settings: DemoSettings, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "availability", "api", *settings.connection_args(),
            "--data-dir", str(settings.state_dir / "api"), "--port", str(settings.api_port),
            "--metrics-port", str(settings.api_metrics_port),
            "--http-port", str(settings.http_port)]
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def print_answers(settings: DemoSettings, console: Console) -> None:
    """Ask the API replica what a web shop would ask, and show the answers."""
    from availability_api.client import ApiError, AvailabilityClient

    target = f"127.0.0.1:{settings.api_port}"
    hot = [f"SKU-{index:06d}" for index in range(HOT_SKUS)]
    with AvailabilityClient(target, timeout=5) as client:
        deadline = time.monotonic() + 20
        while client_health(client) != "SERVING" and time.monotonic() < deadline:
            time.sleep(0.5)
        table = Table(title=f"gRPC answers from the replica at {target}")
        for column in ("call", "answer"):
            table.add_column(column)
        try:
            one = client.get("web", hot[0])
            table.add_row(f"GetAvailability(web, {hot[0]})",
                          f"ats={one.availability.ats} version={one.availability.version} "
                          f"lag={one.replica_lag}")
            batch = client.batch_get("amazon", hot)
            table.add_row(f"BatchGetAvailability(amazon, {len(hot)} skus)",
                          ", ".join(f"{r.sku}={r.ats}" for r in batch.results))
            pickup = client.get("pickup", hot[0], "S001")
            table.add_row(f"GetAvailability(pickup, {hot[0]}, S001)",
                          f"ats={pickup.availability.ats}")
            positions = client.list_positions(hot[0], ["DC-EAST", "S001"])
            table.add_row(f"ListPositions({hot[0]}, DC-EAST S001)", ", ".join(
                f"{p.location_id}: on_hand={p.on_hand} reserved={p.reserved} ats={p.ats}"
                for p in positions.positions))
        except ApiError as exc:
            table.add_row("error", str(exc))
    console.print(table)
    console.print("The engine and the API are still up; ask the API yourself:\n"
                  f"  availability query --target {target} --channel web --sku {hot[0]}\n"
                  f"  availability query --target {target} --channel pickup --sku {hot[0]} "
                  "--location S001")


def client_health(client: object) -> str:
    from availability_api.client import ApiError

    try:
        return client.health()  # type: ignore[attr-defined]
    except ApiError:
        return "UNKNOWN"


def run_demo(settings: DemoSettings, console: Console) -> int:
    """The demo; 0 when the replay ran through, 130 when Ctrl-C cut it short."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    connection = settings.connection()
    # a demo lasts minutes: short segments let compaction leave about one record per key
    # soon after it (the production setting is 15 min)
    create_topics(connection, settings.topics, partitions=4,
                  overrides=[ConfigOverride.parse("snapshots:segment.ms=30000")])
    log = settings.state_dir / "engine.log"
    console.print(f"starting the engine ({settings.processes} processes), log: {log}")
    engine = start_engine(settings, log)
    api = start_api(settings, settings.state_dir / "api.log")
    stats = LiveStats()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_snapshots, args=(settings, stats, stop),
                               daemon=True)
    watcher.start()
    producer = ConfirmedProducer(connection)
    codec = Codec()
    topic = settings.topics.events
    produced = 0
    code = 0
    try:
        for event in opening_stock(settings):
            producer.produce(topic, codec.encode_event(event, topic), event.position_key)
        producer.confirm()
        interval = 1 / settings.rate
        next_send = time.monotonic()
        window: deque[float] = deque(maxlen=int(settings.rate * 20) + 10)
        share = 0.0
        with Live(render(stats, 0, 0, 0), console=console, refresh_per_second=4) as live:
            last_draw = 0.0
            for share, due in retail_day(settings):
                for event in due:
                    producer.produce(topic, codec.encode_event(event, topic),
                                     event.position_key)
                produced += len(due)
                now = time.monotonic()
                window.extend([now] * len(due))
                if engine.poll() is not None:
                    raise RuntimeError(f"the engine exited ({engine.returncode}); see {log}")
                if now - last_draw > 0.25:
                    span = window[-1] - window[0] if len(window) > 1 else 1
                    live.update(render(stats, produced, len(window) / max(span, 1e-3), share))
                    last_draw = now
                next_send += interval
                delay = next_send - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.confirm()
            time.sleep(3)
            live.update(render(stats, produced, 0, 1.0))
        print_answers(settings, console)
        if settings.linger_s > 0:
            shown = "until Ctrl-C" if settings.linger_s == float("inf") else (
                f"for {settings.linger_s:g} s (Ctrl-C stops them sooner)")
            console.print(f"keeping the engine and the API up {shown}")
            deadline = time.monotonic() + settings.linger_s
            while time.monotonic() < deadline and engine.poll() is None:
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("interrupted: stopping the engine and the API the demo started")
        code = 130
    finally:
        stop.set()
        stop_process(api, sig=signal.SIGINT, timeout=40, group=True)
        stop_process(engine, sig=signal.SIGINT, timeout=40, group=True)
        watcher.join(5)
    console.print(f"published {produced:,} events; engine and API stopped. Run them yourself:")
    console.print(f"  availability engine --rules {settings.rules} --recovery-dir "
                  f"{settings.state_dir / 'recovery'}   # resumes where the demo stopped")
    console.print(f"  availability api --data-dir {settings.state_dir / 'api'}")
    if settings.local_kafka:
        how = "the demo started it" if settings.started_kafka else "it was already running"
        console.print(f"The local Kafka broker at {settings.brokers} keeps running ({how}); "
                      "`availability kafka stop` stops it.")
    return code
