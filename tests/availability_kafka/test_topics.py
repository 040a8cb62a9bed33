"""`create_topics` / `availability topics create|describe` on the real broker."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from availability.cli import main
from availability_contracts.topics import (
    DLQ_CONFIG,
    EVENTS_CONFIG,
    SNAPSHOT_CONFIG,
    ConfigOverride,
    TopicNames,
)
from availability_kafka.admin import (
    MissingTopics,
    TopicCreationError,
    create_topics,
    describe_topics,
)

pytestmark = pytest.mark.kafka


def _config(brokers: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": brokers})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(15)
    return {name: entry.value for name, entry in entries.items()}


def _fresh() -> TopicNames:
    suffix = uuid.uuid4().hex[:8]
    return TopicNames(f"e-{suffix}", f"d-{suffix}", f"p-{suffix}", f"c-{suffix}")


def _names_args(names: TopicNames) -> list[str]:
    return ["--events-topic", names.events, "--dlq-topic", names.dlq,
            "--positions-topic", names.positions, "--channels-topic", names.channels]


def _listed(brokers: str, names: TopicNames) -> set[str]:
    topics = AdminClient({"bootstrap.servers": brokers}).list_topics(timeout=15).topics
    return {name for name in names.by_role().values() if name in topics}


def test_snapshot_topics_carry_the_compaction_configs(brokers: str, topics: TopicNames
                                                      ) -> None:
    for topic in (topics.positions, topics.channels):
        config = _config(brokers, topic)
        assert {key: config[key] for key in SNAPSHOT_CONFIG} == dict(SNAPSHOT_CONFIG)
        assert config["cleanup.policy"] == "compact"
        assert config["segment.ms"] == "900000"
        assert config["min.cleanable.dirty.ratio"] == "0.1"
    events, dlq = _config(brokers, topics.events), _config(brokers, topics.dlq)
    assert events["cleanup.policy"] == dlq["cleanup.policy"] == "delete"
    assert events["retention.ms"] == EVENTS_CONFIG["retention.ms"] == "604800000"
    assert dlq["retention.ms"] == DLQ_CONFIG["retention.ms"]
    assert "segment.ms" not in events or events["segment.ms"] == "604800000"  # broker default


def test_create_is_idempotent_and_partitions_configurable(brokers: str) -> None:
    names = _fresh()
    first = create_topics(brokers, names, partitions=2)
    assert all(o.created and o.partitions == 2 and o.replication_factor == 1 for o in first)
    second = create_topics(brokers, names, partitions=2)
    assert not any(o.created for o in second)
    assert [o.name for o in second] == [names.events, names.dlq, names.positions, names.channels]
    assert all(o.differences == () for o in second), second


def test_existing_topics_that_differ_are_reported_and_left_alone(brokers: str) -> None:
    names = _fresh()
    create_topics(brokers, names, partitions=2,
                  overrides=[ConfigOverride.parse("snapshots:segment.ms=60000")])
    again = {o.name: o for o in create_topics(brokers, names, partitions=3)}
    assert again[names.events].differences == ("partitions is 2, would be 3",)
    assert "segment.ms is 60000, would be 900000" in again[names.positions].differences
    assert _config(brokers, names.positions)["segment.ms"] == "60000"  # not altered
    assert all(o.partitions == 2 for o in again.values())


def test_cli_create_applies_config_and_replication_factor(
        brokers: str, capsys: pytest.CaptureFixture[str]) -> None:
    names = _fresh()
    code = main(["topics", "create", "--brokers", brokers, "--replication-factor", "1",
                 "--partitions", "3", "--config", "events:retention.ms=86400000",
                 "--config", "snapshots:segment.ms=600000",
                 "--config", "max.message.bytes=2000000", *_names_args(names)])
    out = capsys.readouterr().out
    assert code == 0
    for name in names.by_role().values():
        assert re.search(rf"^{re.escape(name)}\s+created\s+partitions=3 replication-factor=1$",
                         out, re.M), out
        assert _config(brokers, name)["max.message.bytes"] == "2000000"
    assert _config(brokers, names.events)["retention.ms"] == "86400000"
    assert _config(brokers, names.dlq)["retention.ms"] == DLQ_CONFIG["retention.ms"]
    for name in names.compacted():
        config = _config(brokers, name)
        assert config["segment.ms"] == "600000"
        assert config["min.cleanable.dirty.ratio"] == "0.1"
    # Twice: everything exists, nothing differs with the same options ...
    assert main(["topics", "create", "--brokers", brokers, "--replication-factor", "1",
                 "--partitions", "3", "--config", "events:retention.ms=86400000",
                 "--config", "snapshots:segment.ms=600000",
                 "--config", "max.message.bytes=2000000", *_names_args(names)]) == 0
    out = capsys.readouterr().out
    assert out.count(" exists ") == 4 and "differs" not in out, out
    # ... and without them, the differences are named.
    assert main(["topics", "create", "--brokers", brokers, "--partitions", "3",
                 *_names_args(names)]) == 0
    out = capsys.readouterr().out
    assert "differs: retention.ms is 86400000, would be 604800000" in out
    assert "differs: segment.ms is 600000, would be 900000" in out
    assert "left as they are" in out


@pytest.mark.parametrize("option, reason", [
    (["--config", "no.such.config=1"], "Unknown topic config name: no.such.config"),
    (["--replication-factor", "5"], "replication factor of 5 cannot be reached"),
    (["--config", "dlq:retention.ms=soon"], "Invalid value soon for configuration retention.ms"),
])
def test_cli_create_refused_by_the_cluster_creates_nothing(
        brokers: str, capsys: pytest.CaptureFixture[str], option: list[str],
        reason: str) -> None:
    names = _fresh()
    assert main(["topics", "create", "--brokers", brokers, *option,
                 *_names_args(names)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and reason in captured.err, captured.err
    assert "nothing created" in captured.err
    assert _listed(brokers, names) == set()
    with pytest.raises(TopicCreationError):
        create_topics(brokers, names, replication_factor=5)


@pytest.mark.parametrize("option, reason", [
    (["--config", "cleanup.policy=delete"], "cleanup.policy cannot be changed"),
    (["--config", "events:min.insync.replicas=2"], "more than the replication factor 1"),
    (["--config", "topic:segment.ms=1"], "unknown topic role 'topic'"),
    (["--config", "segment.ms"], "expected [ROLE:]key=value"),
    (["--replication-factor", "0"], "--replication-factor must be at least 1"),
])
def test_cli_create_refuses_bad_options_before_anything(
        brokers: str, capsys: pytest.CaptureFixture[str], option: list[str],
        reason: str) -> None:
    names = _fresh()
    assert main(["topics", "create", "--brokers", brokers, *option,
                 *_names_args(names)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err, err
    assert _listed(brokers, names) == set()


def _produce(brokers: str, topic: str, records: list[tuple[str, str | None]],
             partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": brokers})
    for key, value in records:
        if partition is None:
            producer.produce(topic, key=key, value=value)
        else:
            producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(15) == 0


def test_cli_describe_lists_partitions_configs_and_counts(
        brokers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = _fresh()
    create_topics(brokers, names, partitions=2)
    _produce(brokers, names.events, [("SKU-1|S1", "e")] * 5, partition=0)
    _produce(brokers, names.events, [("SKU-2|S1", "e")] * 2, partition=1)
    # 3 keys on partition 0, written 2, 2 and 1 times; the last one then deleted.
    _produce(brokers, names.channels, [("web|A", "1"), ("web|B", "1"), ("web|A", "2"),
                                       ("web|B", "2"), ("web|C", "1"), ("web|C", None)],
             partition=0)
    _produce(brokers, names.positions, [(f"SKU-{i}|S1", "p") for i in range(4)], partition=1)
    settings = tmp_path / "client.properties"
    settings.write_text("# passed to every client\nclient.id=describe-test\n")

    assert main(["topics", "describe", "--brokers", brokers, "--kafka-config", str(settings),
                 "--count-keys", *_names_args(names)]) == 0
    out = capsys.readouterr().out
    blocks = {block.split(" ", 1)[0]: block for block in out.strip().split("\n\n")}
    assert list(blocks) == [names.events, names.dlq, names.positions, names.channels]
    events = blocks[names.events]
    assert events.startswith(f"{names.events} (events): 2 partitions, replication factor 1")
    assert "configs: cleanup.policy=delete retention.ms=604800000" in events
    rows = [line.split() for line in events.splitlines() if line.split()[0] in ("0", "1")]
    assert rows == [["0", "1", "1", "1", "0", "5", "5"], ["1", "1", "1", "1", "0", "2", "2"]]
    assert events.splitlines()[-1].split() == ["total", "7"]
    assert "records" not in events  # not compacted: end - start is the record count

    channels = blocks[names.channels]
    assert "cleanup.policy=compact" in channels and "segment.ms=900000" in channels
    assert "min.cleanable.dirty.ratio=0.1" in channels
    header = next(line for line in channels.splitlines()
                  if line.startswith("  partition")).split()
    assert header == ["partition", "leader", "replicas", "isr", "start", "end", "end-start",
                      "records", "keys", "live", "keys"]
    zero = next(line for line in channels.splitlines() if line.split()[0] == "0").split()
    assert zero[4:] == ["0", "6", "6", "6", "3", "2"]
    assert channels.splitlines()[-1].split() == ["total", "6", "6", "3", "2"]
    assert blocks[names.positions].splitlines()[-1].split() == ["total", "4", "4", "4", "4"]

    # Without --count-keys the topics are not read: no key columns.
    assert main(["topics", "describe", "--brokers", brokers, *_names_args(names)]) == 0
    assert "live keys" not in capsys.readouterr().out


def test_cli_describe_missing_topic_is_one_line_and_non_zero(
        brokers: str, topics: TopicNames, capsys: pytest.CaptureFixture[str]) -> None:
    names = TopicNames(topics.events, topics.dlq, topics.positions, f"absent-{uuid.uuid4()}")
    assert main(["topics", "describe", "--brokers", brokers, *_names_args(names)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"availability topics: error: missing topic: {names.channels} "
                            "(run `availability topics create`)\n")
    with pytest.raises(MissingTopics) as info:
        describe_topics(brokers, names)
    assert info.value.names == [names.channels]
