"""Crash safety and scale-out through the real broker."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from availability.retail_day import Workload
from availability_contracts.codec import Codec
from availability_contracts.topics import TopicNames
from availability_domain.events import InventoryEvent
from availability_domain.reference import reference_tables as fold_in_process
from availability_domain.rules import load_rules
from availability_kafka.delivery import ConfirmedProducer

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "examples" / "rules.toml"


def publish(brokers: str, topic: str, events: list[InventoryEvent], codec: Codec) -> None:
    producer = ConfirmedProducer(brokers)
    for event in events:
        producer.produce(topic, codec.encode_event(event, topic), event.position_key)
    producer.confirm(120)


def _has_started(engine: Any) -> bool:
    return "recovery" in engine.log()


def test_kill_9_at_random_moments_loses_and_doubles_nothing(
        snapshot_tables: Callable[..., Any],
        brokers: str, topics: TopicNames, codec: Codec,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any]) -> None:
    events = list(Workload(skus=3_000, seed=11).events(150_000))  # more than 3 kill windows drain
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
        wait_for(lambda: snapshot_tables(topics) == expected, 240,
                 "the tables after three kill -9 to equal the in-process fold", interval=3)
    finally:
        final.stop()


@pytest.mark.parametrize("topics", [4], indirect=True)
def test_two_processes_equal_one(snapshot_tables: Callable[..., Any], brokers: str,
                                 topics: TopicNames, codec: Codec, tmp_path: Path,
                                 engine_factory: Callable[..., Any],
                                 wait_for: Callable[..., Any]) -> None:
    events = list(Workload(skus=500, seed=3).events(40_000))
    expected = fold_in_process(events, load_rules(RULES))
    publish(brokers, topics.events, events, codec)
    engine = engine_factory(topics, RULES, processes=2,
                            recovery_dir=tmp_path / "recovery-2").start()
    try:
        wait_for(lambda: snapshot_tables(topics) == expected, 120,
                 "two processes to produce the one-process tables", interval=2)
    finally:
        assert engine.stop() == 0, engine.log()
