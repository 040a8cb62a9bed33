"""The read replica: stored offsets on restart, stale versions, identical replicas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from availability_api.store import ReplicaStore, StoreMismatch
from availability_contracts.topics import TopicNames

from .conftest import SnapshotPublisher, channel_record, position_record

pytestmark = pytest.mark.kafka

SKUS = [f"SKU-{i:03d}" for i in range(60)]


def first_load(snapshots: SnapshotPublisher, topics: TopicNames) -> int:
    return snapshots.publish(
        topics,
        channels=[channel_record("web", sku, i, 1, locations=[("DC1", i, 0)])
                  for i, sku in enumerate(SKUS)]
        + [channel_record("pickup", sku, 2, 1, "S001", [("S001", 2, 0)]) for sku in SKUS[:5]],
        positions=[position_record(sku, "DC1", i, 1) for i, sku in enumerate(SKUS)],
    )


def answers(api: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Everything a replica says about the test data, as plain tuples."""
    with api.client() as client:
        web = [(v.sku, v.found, v.ats, v.version, v.as_of, v.computed_at,
                tuple((c.location_id, c.ats) for c in v.locations))
               for v in client.batch_get("web", [*SKUS, "SKU-404"]).results]
        pickup = [(v.sku, v.found, v.ats, v.version)
                  for v in client.batch_get("pickup", SKUS[:6], "S001").results]
        positions = [(p.sku, p.location_id, p.on_hand, p.ats, p.version)
                     for sku in SKUS[:10] for p in client.list_positions(sku).positions]
    return web + pickup, positions


def test_restart_resumes_from_stored_offsets(
        topics: TopicNames, snapshots: SnapshotPublisher, api_factory: Callable[..., Any],
        tmp_path: Path) -> None:
    data_dir = tmp_path / "replica"
    loaded = first_load(snapshots, topics)
    first = api_factory(topics, data_dir)
    first.wait_serving()
    assert first.replica.records_read == loaded == 125
    before = answers(first)
    stored = first.replica.stored_offsets()
    first.stop()

    newer = snapshots.publish(topics, channels=[
        channel_record("web", "SKU-000", 99, 2),  # newer: applied
        channel_record("web", "SKU-001", 77, 1),  # same version: dropped
        channel_record("web", "SKU-404", 5, 1),  # a new key
    ])
    second = api_factory(topics, data_dir)
    second.wait_serving()
    # only the records published while it was down were read again
    assert second.replica.records_read == newer == 3
    assert second.replica.records_skipped == 1
    assert all(second.replica.stored_offsets()[key] >= offset
               for key, offset in stored.items())
    web_after, positions_after = answers(second)
    web_before, positions_before = before
    assert positions_after == positions_before
    changed = {row[0]: row for row in web_after if row not in web_before}
    assert {sku: (row[2], row[3]) for sku, row in changed.items()} == {
        "SKU-000": (99, 2), "SKU-404": (5, 1)}


def test_a_snapshot_not_newer_than_the_stored_one_is_dropped(
        topics: TopicNames, snapshots: SnapshotPublisher, api_factory: Callable[..., Any],
        wait_for: Callable[..., Any]) -> None:
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 30, 3)],
                      positions=[position_record("SKU-1", "DC1", 30, 3)])
    api = api_factory(topics)
    api.wait_serving()
    snapshots.publish(topics, channels=[
        channel_record("web", "SKU-1", 10, 1),  # older, arriving late: dropped
        channel_record("web", "SKU-1", 20, 3),  # same version: dropped
    ], positions=[position_record("SKU-1", "DC1", 5, 2)])
    wait_for(lambda: api.replica.lag == 0 and api.replica.records_read == 5, 20,
             "the late records to be read")
    with api.client() as client:
        value = client.get("web", "SKU-1").availability
        position = client.list_positions("SKU-1").positions[0]
    assert (value.ats, value.version) == (30, 3)
    assert (position.on_hand, position.version) == (30, 3)
    replica = api.replica
    assert replica.records_skipped == 3
    assert replica.records_read == replica.records_applied + replica.records_skipped == 5


def test_two_replicas_answer_the_same(
        topics: TopicNames, snapshots: SnapshotPublisher, api_factory: Callable[..., Any],
        wait_for: Callable[..., Any]) -> None:
    first_load(snapshots, topics)
    one = api_factory(topics)
    one.wait_serving()
    # the second starts later and sees updates the first applies live
    snapshots.publish(topics, channels=[channel_record("web", sku, 1000 + i, 5)
                                        for i, sku in enumerate(SKUS[::3])])
    two = api_factory(topics)
    two.wait_serving()
    wait_for(lambda: one.replica.lag == 0 and one.replica.records_read == 145, 20,
             "the first replica to apply the updates")
    assert answers(one) == answers(two)
    assert answers(one)[0][0][2] == 1000


def test_a_data_dir_refuses_other_topics(tmp_path: Path) -> None:
    ReplicaStore(tmp_path, "a.positions", "a.channels").close()
    with pytest.raises(StoreMismatch, match=r"a\.positions\|a\.channels"):
        ReplicaStore(tmp_path, "b.positions", "b.channels")


def test_a_tombstone_deletes_the_key_and_a_newer_record_recreates_it(
        topics: TopicNames, snapshots: SnapshotPublisher, api_factory: Callable[..., Any],
        wait_for: Callable[..., Any]) -> None:
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 5, 1),
                                        channel_record("web", "SKU-2", 8, 1)],
                      positions=[position_record("SKU-1", "DC1", 5, 1)])
    api = api_factory(topics)
    api.wait_serving()
    store = api.server.store
    with api.client() as client:
        watch = client.watch("web", ["SKU-1"], timeout=20)
        stream = iter(watch)
        assert next(stream).availability.found

        snapshots.delete(topics, channel_keys=["web|SKU-1"], position_keys=["SKU-1|DC1"])
        deleted = next(stream).availability
        assert (deleted.found, deleted.ats, deleted.version) == (False, 0, 0)
        wait_for(lambda: not client.list_positions("SKU-1").positions, 10,
                 "the position tombstone to be applied")
        assert store.channel_frame("web|SKU-1") is None
        assert store.position_frames("SKU-1") == []
        answer = client.get("web", "SKU-1").availability
        assert (answer.found, answer.ats) == (False, 0)
        assert client.get("web", "SKU-2").availability.ats == 8

        snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 9, 2)],
                          positions=[position_record("SKU-1", "DC1", 9, 2)])
        recreated = next(stream).availability
        watch.cancel()
        assert (recreated.found, recreated.ats, recreated.version) == (True, 9, 2)
        assert client.get("web", "SKU-1").availability.ats == 9
        wait_for(lambda: client.list_positions("SKU-1").positions, 10,
                 "the position to be re-created")
        assert store.channel_frame("web|SKU-1") is not None


def test_a_record_after_a_tombstone_is_applied_whatever_the_batch_boundaries(
        topics: TopicNames, snapshots: SnapshotPublisher, api_factory: Callable[..., Any],
        wait_for: Callable[..., Any], tmp_path: Path) -> None:
    """After a deletion the replica holds no version to compare with, so a record that
    follows a tombstone counts whether both arrive in one batch or in two."""
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 30, 3)])
    first = api_factory(topics, tmp_path / "replica")
    first.wait_serving()
    first.stop()
    snapshots.delete(topics, channel_keys=["web|SKU-1"])
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 10, 1)])
    second = api_factory(topics, tmp_path / "replica")  # both records in one backlog
    second.wait_serving()
    with second.client() as client:
        value = client.get("web", "SKU-1").availability
    assert (value.found, value.ats, value.version) == (True, 10, 1)


ENGINE_VERSION = 1_796_110_561_420_769  # microseconds since the epoch, as the engine numbers
INT64_MAX = 2**63 - 1


def test_engine_sized_versions_are_kept_exactly(
        topics: TopicNames, snapshots: SnapshotPublisher, api_factory: Callable[..., Any],
        wait_for: Callable[..., Any]) -> None:
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 5, ENGINE_VERSION),
                                        channel_record("web", "SKU-2", 6, INT64_MAX - 1)],
                      positions=[position_record("SKU-1", "DC1", 5, INT64_MAX - 1)])
    api = api_factory(topics)
    api.wait_serving()
    snapshots.publish(topics, channels=[
        channel_record("web", "SKU-1", 7, ENGINE_VERSION + 1),  # newer by one: applied
        channel_record("web", "SKU-1", 1, ENGINE_VERSION),  # same: dropped
        channel_record("web", "SKU-2", 8, INT64_MAX),
    ], positions=[position_record("SKU-1", "DC1", 1, INT64_MAX - 2),  # older: dropped
                  position_record("SKU-1", "DC1", 9, INT64_MAX)])
    wait_for(lambda: api.replica.lag == 0 and api.replica.records_read == 8, 20,
             "the newer records to be read")
    with api.client() as client:
        values = {v.sku: (v.ats, v.version)
                  for v in client.batch_get("web", ["SKU-1", "SKU-2"]).results}
        (position,) = client.list_positions("SKU-1").positions
        with client.watch("web", ["SKU-1"], timeout=10) as watch:
            watched = next(iter(watch)).availability.version
    assert values == {"SKU-1": (7, ENGINE_VERSION + 1), "SKU-2": (8, INT64_MAX)}
    assert (position.on_hand, position.version) == (9, INT64_MAX)
    assert watched == ENGINE_VERSION + 1
    assert api.replica.records_skipped == 2
