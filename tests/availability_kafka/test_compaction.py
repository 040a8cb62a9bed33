"""The snapshot topics stay near one record per key: the log cleaner really runs.

The topic is created by `create_topics` with the production settings except two test
overrides: ``segment.ms=1000`` (the cleaner only cleans closed segments, and Kafka rolls
a segment on the first write after it is that old) and ``min.cleanable.dirty.ratio=0.01``.
The broker's own cleaner settings are left alone (``log.cleaner.backoff.ms`` is 15 s by
default: an idle cleaner looks for work that often), so this takes a few seconds to ~20.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from availability_contracts.topics import ConfigOverride, TopicNames
from availability_kafka.admin import create_topics, describe_topics

pytestmark = pytest.mark.kafka

KEYS, VERSIONS, DEADLINE_S = 200, 20, 60.0


def _counts(brokers: str, names: TopicNames) -> tuple[int, int]:
    """(records, distinct keys) actually in the positions topic, read to its end."""
    state = next(s for s in describe_topics(brokers, names, count_keys=True)
                 if s.name == names.positions)
    return (sum(p.records or 0 for p in state.partitions),
            sum(p.keys or 0 for p in state.partitions))


def test_compacted_topic_shrinks_to_about_one_record_per_key(
        brokers: str, record_property: pytest.RecordProperty) -> None:
    suffix = uuid.uuid4().hex[:8]
    names = TopicNames(f"ce-{suffix}", f"cd-{suffix}", f"cp-{suffix}", f"cc-{suffix}")
    create_topics(brokers, names, partitions=2, overrides=[
        ConfigOverride.parse("snapshots:segment.ms=1000"),
        ConfigOverride.parse("snapshots:min.cleanable.dirty.ratio=0.01"),
    ])
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    for version in range(VERSIONS):
        for key in range(KEYS):
            producer.produce(names.positions, key=f"SKU-{key}|S1", value=f"v{version}")
    assert producer.flush(30) == 0
    records, keys = _counts(brokers, names)
    assert (records, keys) == (KEYS * VERSIONS, KEYS)
    before = records / keys

    started = time.monotonic()
    while True:
        # A later write rolls the segment holding the versions once it is older than
        # segment.ms; only then can the cleaner compact it.
        time.sleep(1.1)
        for partition in (0, 1):
            producer.produce(names.positions, key=f"roll-{partition}", value="x",
                             partition=partition)
        assert producer.flush(30) == 0
        records, keys = _counts(brokers, names)
        elapsed = time.monotonic() - started
        if records <= 1.5 * keys or elapsed > DEADLINE_S:
            break
    after = records / keys
    print(f"\ncompaction: {before:.2f} records/key before, {after:.2f} after "
          f"({records} records, {keys} keys) {elapsed:.1f} s after the writes")
    record_property("records_per_key_before", before)
    record_property("records_per_key_after", after)
    record_property("seconds_to_compact", round(elapsed, 1))
    assert after <= 1.5, f"still {records} records for {keys} keys after {elapsed:.0f} s"
