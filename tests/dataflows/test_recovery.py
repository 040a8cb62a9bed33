"""Crash safety and scale-out through the real broker (DESIGN 3 rule 4, DESIGN 8)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from availability.codec import CHANNEL_SCHEMA, POSITION_SCHEMA, Codec
from availability.delivery import ConfirmedProducer
from availability.topic_reader import latest_by_key
from availability.topics import TopicNames
from benchmarks.workload import Workload
from dataflows.domain.events import InventoryEvent
from dataflows.domain.inventory import SkuInventory
from dataflows.domain.rules import Rules, load_rules
from dataflows.domain.snapshots import SnapshotPublisher

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "examples" / "rules.toml"
QUANTITIES = ("on_hand", "unsellable", "reserved", "in_transit", "safety_stock", "ats", "as_of")


def fold_in_process(events: Iterable[InventoryEvent], rules: Rules
                    ) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """The expected tables: every event applied exactly once, in order, in one process."""
    inventories: dict[str, SkuInventory] = {}
    publishers: dict[str, SnapshotPublisher] = {}
    positions: dict[str, tuple[int, ...]] = {}
    channels: dict[str, int] = {}
    for event in events:
        inventory = inventories.get(event.sku)
        if inventory is None:
            inventory = inventories[event.sku] = SkuInventory(event.sku)
            publishers[event.sku] = SnapshotPublisher()
        outcome = inventory.apply_event(event, 0)
        if outcome.status != "applied":
            continue
        changed_positions, changed_channels = publishers[event.sku].publish(
            inventory, outcome.touched, rules, 0, 0)
        for snap in changed_positions:
            positions[snap.key] = tuple(getattr(snap, q) for q in QUANTITIES)
        for channel in changed_channels:
            channels[channel.key] = channel.ats
    return positions, channels


def engine_tables(brokers: str, topics: TopicNames, codec: Codec
                  ) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    positions = latest_by_key(brokers, topics.positions,
                              lambda b: codec.decode(POSITION_SCHEMA, b), timeout=60)
    channels = latest_by_key(brokers, topics.channels,
                             lambda b: codec.decode(CHANNEL_SCHEMA, b), timeout=60)
    return ({k: tuple(v[q] for q in QUANTITIES) for k, v in positions.items()},
            {k: v["ats"] for k, v in channels.items()})


def publish(brokers: str, topic: str, events: list[InventoryEvent], codec: Codec) -> None:
    producer = ConfirmedProducer(brokers)
    for event in events:
        producer.produce(topic, codec.encode_event(event, topic), event.position_key)
    producer.confirm(120)


def _has_started(engine: Any) -> bool:
    return "recovery" in engine.log()


def test_kill_9_at_random_moments_loses_and_doubles_nothing(
        brokers: str, topics: TopicNames, codec: Codec,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any]) -> None:
    events = list(Workload(skus=3_000, seed=11).events(250_000))
    expected = fold_in_process(events, load_rules(RULES))
    publish(brokers, topics.events, events, codec)

    rng = random.Random(5)
    for crash in range(3):
        engine = engine_factory(topics, RULES).start()
        wait_for(partial(_has_started, engine), 30, f"engine start #{crash + 1}")
        time.sleep(rng.uniform(2.0, 5.0))
        assert engine.process.poll() is None, engine.log()
        engine.kill()

    final = engine_factory(topics, RULES).start()
    try:
        wait_for(lambda: engine_tables(brokers, topics, codec) == expected, 240,
                 "the tables after three kill -9 to equal the in-process fold", interval=3)
    finally:
        final.stop()


@pytest.mark.parametrize("topics", [4], indirect=True)
def test_two_processes_equal_one(brokers: str, topics: TopicNames, codec: Codec, tmp_path: Path,
                                 engine_factory: Callable[..., Any],
                                 wait_for: Callable[..., Any]) -> None:
    events = list(Workload(skus=500, seed=3).events(40_000))
    expected = fold_in_process(events, load_rules(RULES))
    publish(brokers, topics.events, events, codec)
    engine = engine_factory(topics, RULES, processes=2,
                            recovery_dir=tmp_path / "recovery-2").start()
    try:
        wait_for(lambda: engine_tables(brokers, topics, codec) == expected, 120,
                 "two processes to produce the one-process tables", interval=2)
    finally:
        assert engine.stop() == 0, engine.log()
