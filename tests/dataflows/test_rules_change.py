"""A rules change reaches every number it affects at start, with no new event: changed
numbers are republished, a new channel gets a number for every SKU, a removed channel's
keys (and per-location keys of a location no longer eligible) are deleted with
tombstones, on the topics and in an API replica reading them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from availability_api.client import ApiError, AvailabilityClient
from availability_contracts.codec import Codec
from availability_contracts.topics import TopicNames
from availability_domain.events import InventoryEvent, parse_event
from availability_domain.reference import reference_tables as fold_in_process
from availability_domain.rules import load_rules
from availability_kafka.topic_reader import scan_topic

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
T0 = int(time.time() * 1000) - 3_600_000

BEFORE = """
[locations.DC1]
type = "dc"
safety_stock = 1
[locations.S1]
type = "store"
tags = ["pickup"]
[locations.S2]
type = "store"
tags = ["pickup"]

[channels.web]
location_types = ["dc", "store"]
buffer = 1
[channels.amazon]
locations = ["DC1"]
allocation = 0.5
[channels.walmart]
locations = ["DC1"]
[channels.pickup]
location_tags = ["pickup"]
per_location = true
"""

AFTER = """
[locations.DC1]
type = "dc"
safety_stock = 4          # a location's safety stock
[locations.S1]
type = "store"
tags = ["pickup"]
[locations.S2]
type = "store"            # no longer tagged pickup: its pickup keys go
tags = []

[channels.web]
location_types = ["dc", "store"]
buffer = 1
max_quantity = 20         # a cap
[channels.amazon]
locations = ["DC1"]
allocation = 0.25         # an allocation
[channels.pickup]
location_tags = ["pickup"]
per_location = true
[channels.stores]         # a channel added; walmart removed
location_types = ["store"]
"""

SKUS = [f"SKU-{n}" for n in range(12)]


def events() -> list[InventoryEvent]:
    out = []
    for n, sku in enumerate(SKUS):
        for location, quantity in (("DC1", 30 + n), ("S1", 3 + n % 4), ("S2", 5 + n % 3)):
            out.append(parse_event({
                "event_id": f"{sku}-{location}", "event_type": "RECEIPT",
                "occurred_at": T0 + n, "source": "erp", "sku": sku, "location_id": location,
                "quantity": quantity}))
    return out


def record_count(brokers: str, topic: str) -> int:
    return sum(1 for _ in scan_topic(brokers, topic, timeout=30))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(brokers: str, topics: TopicNames, data_dir: Path, port: int, log: Path
              ) -> subprocess.Popen[bytes]:
    exe = REPO / ".venv" / "bin" / "availability"
    argv = [str(exe) if exe.exists() else "availability", "api", "--brokers", brokers,
            "--data-dir", str(data_dir), "--port", str(port), "--host", "127.0.0.1",
            "--metrics-port", "0", "--http-port", "0", "--events-topic", topics.events,
            "--dlq-topic", topics.dlq,
            "--positions-topic", topics.positions, "--channels-topic", topics.channels]
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**os.environ})


def replica_channels(client: AvailabilityClient, keys: list[str]) -> dict[str, int | None]:
    """Channel key -> ats the replica serves (None: not found or channel unknown)."""
    answers: dict[str, int | None] = {}
    for key in keys:
        channel, sku, *location = key.split("|")
        try:
            found = client.get(channel, sku, location[0] if location else "").availability
        except ApiError:
            answers[key] = None
            continue
        answers[key] = found.ats if found.found else None
    return answers


def test_restart_with_changed_rules_republishes_without_events(
        snapshot_tables: Callable[..., Any],
        brokers: str, topics: TopicNames, codec: Codec, tmp_path: Path,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any],
        publish_events: Callable[..., int]) -> None:
    before, after = tmp_path / "before.toml", tmp_path / "after.toml"
    before.write_text(BEFORE)
    after.write_text(AFTER)
    stream = events()
    expected_before = fold_in_process(stream, load_rules(before))
    expected_after = fold_in_process(stream, load_rules(after))
    publish_events(topics.events, stream)

    engine = engine_factory(topics, before).start()
    wait_for(lambda: snapshot_tables(topics) == expected_before, 60,
             "the tables under the first rules")
    assert engine.stop() == 0, engine.log()

    port = free_port()
    api = start_api(brokers, topics, tmp_path / "api", port, tmp_path / "api.log")
    client = AvailabilityClient(f"127.0.0.1:{port}", timeout=5)
    try:
        all_keys = sorted(set(expected_before[1]) | set(expected_after[1]))
        wait_for(lambda: {k: v for k, v in replica_channels(client, all_keys).items()
                          if v is not None} == expected_before[1], 60,
                 "the replica to serve the first rules' numbers")

        engine = engine_factory(topics, after).start()
        try:
            wait_for(lambda: snapshot_tables(topics) == expected_after, 60,
                     "the tables under the changed rules, with no new event")
            removed = sorted(set(expected_before[1]) - set(expected_after[1]))
            assert removed and all(k.startswith(("walmart|", "pickup|")) for k in removed)
            assert any(k.startswith("stores|") for k in expected_after[1])
            wait_for(lambda: {k: v for k, v in replica_channels(client, all_keys).items()
                              if v is not None} == expected_after[1], 60,
                     "the replica to serve the changed rules' numbers and drop removed keys")
        finally:
            assert engine.stop() == 0, engine.log()

        # the same rules again: a plain restart republishes nothing
        counts = (record_count(brokers, topics.positions),
                  record_count(brokers, topics.channels))
        engine = engine_factory(topics, after).start()
        try:
            wait_for(lambda: "recovery" in engine.log(), 30, "the engine to start")
            time.sleep(4)
        finally:
            assert engine.stop() == 0, engine.log()
        assert (record_count(brokers, topics.positions),
                record_count(brokers, topics.channels)) == counts
    finally:
        client.close()
        api.terminate()
        api.wait(30)


@pytest.mark.parametrize("processes", [1, 2])
def test_sighup_reloads_the_rules_and_refuses_a_broken_file(
        snapshot_tables: Callable[..., Any],
        processes: int, brokers: str, topics: TopicNames, codec: Codec, tmp_path: Path,
        engine_factory: Callable[..., Any], wait_for: Callable[..., Any],
        publish_events: Callable[..., int]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(BEFORE)
    stream = events()
    expected_before = fold_in_process(stream, load_rules(rules))
    publish_events(topics.events, stream)
    engine = engine_factory(topics, rules, processes=processes).start()
    try:
        wait_for(lambda: snapshot_tables(topics) == expected_before, 60,
                 "the tables under the first rules")
        pid = engine.process.pid

        rules.write_text(BEFORE + "\n[channels.broken]\nallocation = 7\n")
        engine.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "rules not reloaded" in engine.log(), 20,
                 "the engine to refuse the broken rules file")
        assert "allocation" in engine.log()
        time.sleep(1)
        assert engine.process.poll() is None, engine.log()

        rules.write_text(AFTER)
        engine.process.send_signal(signal.SIGHUP)
        expected_after = fold_in_process(stream, load_rules(rules))
        wait_for(lambda: snapshot_tables(topics) == expected_after, 90,
                 "the tables under the reloaded rules")
        assert engine.process.poll() is None and engine.process.pid == pid, engine.log()
        assert "reloading rules" in engine.log()
    finally:
        assert engine.stop() == 0, engine.log()
