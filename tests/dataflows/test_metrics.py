"""The engine's Prometheus endpoint serves the named metrics with real values."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from availability_contracts.codec import Codec
from availability_contracts.topics import TopicNames
from availability_domain.events import EventType, InventoryEvent

pytestmark = pytest.mark.kafka

RULES = """
[locations.DC1]
type = "dc"

[channels.web]
location_types = ["dc"]
"""


def test_engine_metrics_count_events_dead_letters_freshness_and_lag(
        tmp_path: Path, topics: TopicNames, codec: Codec,
        publish_events: Callable[..., int], engine_factory: Callable[..., Any],
        wait_for: Callable[..., Any], free_port: Callable[[], int],
        scrape_metrics: Callable[[int], dict[Any, float]]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    now = int(time.time() * 1000)
    receipt = InventoryEvent("m1", EventType.RECEIPT, now, "wms", "SKU-1", "DC1", 5)
    sale = InventoryEvent("m2", EventType.SALE, now, "pos", "SKU-1", "DC1", 2)
    publish_events(topics.events, [receipt, sale, receipt, b"\x00\x01garbage"])
    port = free_port()
    engine_factory(topics, rules, extra=("--metrics-port", str(port))).start()

    events = "availability_events_total"

    def counted() -> dict[Any, float] | None:
        """Both once counted: the garbage may sit in another partition, read later."""
        samples = scrape_metrics(port)
        duplicate = (events, (("event_type", "RECEIPT"), ("result", "duplicate")))
        invalid = (events, (("event_type", "unknown"), ("result", "invalid")))
        return samples if samples.get(duplicate) == 1 and invalid in samples else None

    samples = wait_for(counted, 60, "the duplicate RECEIPT and the garbage to be counted")
    assert samples[(events, (("event_type", "RECEIPT"), ("result", "applied")))] == 1
    assert samples[(events, (("event_type", "SALE"), ("result", "applied")))] == 1
    assert samples[(events, (("event_type", "unknown"), ("result", "invalid")))] == 1
    assert samples[("availability_dead_letters_total", (("reason", "undecodable"),))] == 1
    assert samples[("availability_snapshots_total", (("kind", "position"),))] >= 1
    assert samples[("availability_freshness_seconds_count", ())] >= 1
    lags = [value for (name, _), value in samples.items()
            if name == "availability_input_lag_messages"]
    assert len(lags) == 4 and all(value == 0 for value in lags)
