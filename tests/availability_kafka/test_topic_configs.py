"""The topic configs `topics create` asks for (pure: no broker)."""

from __future__ import annotations

import pytest

from availability_contracts.topics import (
    SNAPSHOT_CONFIG,
    ConfigOverride,
    TopicConfigError,
    TopicNames,
)

NAMES = TopicNames("e", "d", "p", "c")


def test_defaults_per_role() -> None:
    configs = NAMES.configs()
    assert list(configs) == ["e", "d", "p", "c"]
    assert configs["p"] == configs["c"] == dict(SNAPSHOT_CONFIG)
    assert configs["p"]["cleanup.policy"] == "compact"
    assert configs["e"] == {"cleanup.policy": "delete", "retention.ms": "604800000"}
    assert configs["d"] == {"cleanup.policy": "delete", "retention.ms": "2592000000"}
    assert configs["p"] is not configs["c"]  # an override of one does not leak into the other


def test_replicated_topics_need_two_in_sync_replicas() -> None:
    assert all("min.insync.replicas" not in c for c in NAMES.configs(replication_factor=2).values())
    assert all(c["min.insync.replicas"] == "2"
               for c in NAMES.configs(replication_factor=3).values())
    overridden = NAMES.configs([ConfigOverride.parse("min.insync.replicas=3")], 3)
    assert {c["min.insync.replicas"] for c in overridden.values()} == {"3"}
    with pytest.raises(TopicConfigError, match="more than the replication factor 3"):
        NAMES.configs([ConfigOverride.parse("dlq:min.insync.replicas=4")], 3)


def test_overrides_by_role_group_and_in_order() -> None:
    overrides = [ConfigOverride.parse(text) for text in (
        "max.message.bytes=2000000", "snapshots:segment.ms=60000",
        "channels:segment.ms=30000", " events : retention.ms = 86400000 ")]
    configs = NAMES.configs(overrides)
    assert {c["max.message.bytes"] for c in configs.values()} == {"2000000"}
    assert configs["p"]["segment.ms"] == "60000"
    assert configs["c"]["segment.ms"] == "30000"
    assert configs["e"]["retention.ms"] == "86400000"
    assert configs["d"]["retention.ms"] == "2592000000"
    assert ConfigOverride.parse("all:a.b=1:2").value == "1:2"


@pytest.mark.parametrize("text, reason", [
    ("segment.ms", "expected [ROLE:]key=value"),
    ("=1", "is not a topic config name"),
    ("Segment.MS=1", "is not a topic config name"),
    ("events:segment.ms=", "empty value"),
    ("snapshot:segment.ms=1", "unknown topic role 'snapshot'"),
    ("cleanup.policy=compact", "cleanup.policy cannot be changed"),
    ("events:cleanup.policy=compact,delete", "cleanup.policy cannot be changed"),
])
def test_bad_overrides_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(TopicConfigError) as info:
        ConfigOverride.parse(text)
    assert reason in str(info.value)
    assert info.value.code == "topic_config"


def test_four_distinct_names_are_required() -> None:
    with pytest.raises(TopicConfigError, match="four different names"):
        TopicNames("e", "d", "x", "x").configs()


def test_default_replication_factor_follows_the_cluster() -> None:
    from availability_kafka.admin import default_replication_factor

    assert [default_replication_factor(n) for n in (0, 1, 2, 3, 7)] == [1, 1, 2, 3, 3]
    assert NAMES.configs(replication_factor=default_replication_factor(5))["c"][
        "min.insync.replicas"] == "2"
