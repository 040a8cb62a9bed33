"""The compiled codec (native/) gives what its Python references give: the same field
mapping or the same refusal for any bytes, the same bytes for any snapshot, on random
input and on the benchmark workload folded in and out of order."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from availability.retail_day import retail_workload
from availability_contracts import avro_reader, avro_writer, hot_codec
from availability_contracts.errors import InvalidEvent
from availability_domain.channels import LocationContribution
from availability_domain.inventory import SkuInventory
from availability_domain.rules import load_rules
from availability_domain.snapshots import ChannelSnapshot, PositionSnapshot, SnapshotPublisher
from benchmarks.avro_events import encode_event
from benchmarks.rules import RULES_200_STORES
from tests.availability_contracts.test_avro_reader import VALID, encode, records


def _native() -> Any:
    from availability_contracts import _avro
    return _avro


def outcome(read: Callable[[bytes, int], tuple[dict[str, Any], int]], data: bytes, pos: int = 0
            ) -> object:
    """What a reader makes of ``data``: its result, or the refusal's reason and code."""
    try:
        return read(data, pos)
    except InvalidEvent as exc:
        return ("refused", str(exc), exc.code)


def test_the_install_built_the_compiled_codec() -> None:
    if os.environ.get("AVAILABILITY_PURE_PYTHON", "") not in ("", "0"):
        assert hot_codec.IMPLEMENTATION == "python"
        return
    assert hot_codec.IMPLEMENTATION == "compiled", (
        "availability_contracts._avro is not built: `make setup` builds it with cargo")
    assert hot_codec.read_inventory_event is _native().read_inventory_event


@settings(max_examples=400, deadline=None)
@given(records, st.binary(max_size=3))
def test_reads_every_valid_record_as_the_reference(record: dict[str, Any], prefix: bytes
                                                    ) -> None:
    data = prefix + encode(record)
    compiled = outcome(_native().read_inventory_event, data, len(prefix))
    assert compiled == outcome(avro_reader.read_inventory_event, data, len(prefix))
    assert compiled == (record, len(data))


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_bytes_get_the_reference_outcome(data: st.DataObject) -> None:
    """Bounded fuzzing: random bytes, and valid records with bytes changed, cut short or
    extended; the refusal reasons must match word for word."""
    base = data.draw(st.sampled_from([VALID, encode(data.draw(records))]))
    kind = data.draw(st.sampled_from(["random", "mutate", "truncate", "extend"]))
    if kind == "random":
        payload = data.draw(st.binary(max_size=80))
    elif kind == "mutate":
        payload = bytearray(base)
        for _ in range(data.draw(st.integers(1, 4))):
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        payload = bytes(payload)
    elif kind == "truncate":
        payload = base[:data.draw(st.integers(0, len(base)))]
    else:
        payload = base + data.draw(st.binary(min_size=1, max_size=12))
    assert (outcome(_native().read_inventory_event, payload)
            == outcome(avro_reader.read_inventory_event, payload))


@pytest.mark.parametrize("payload", [
    b"", b"\x80", b"\xff" * 11, b"\x02a\x81\x80\x80\x80\x80\x80\x80\x80\x80\x02",
    b"\x02a\x0d", b"\x7f", b"\x04\xff\xfe", VALID[:-1] + b"\x02",
], ids=["empty", "varint cut", "11-byte varint", "over 64 bits", "negative type",
        "negative length", "not utf-8", "restockable 1 byte"])
def test_edge_refusals_match(payload: bytes) -> None:
    assert (outcome(_native().read_inventory_event, payload)
            == outcome(avro_reader.read_inventory_event, payload))


longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
numbers = st.one_of(st.integers(-5000, 5000), longs)
texts = st.text(max_size=16)
contributions = st.builds(LocationContribution, texts, numbers, numbers)
position_snapshots = st.builds(PositionSnapshot, texts, texts, *[numbers] * 9)
channel_snapshots = st.builds(ChannelSnapshot, texts, texts, st.none() | texts, numbers,
                              numbers, numbers, numbers,
                              st.lists(contributions, max_size=8).map(tuple))


@settings(max_examples=400, deadline=None)
@given(position_snapshots, channel_snapshots)
def test_writes_the_reference_bytes(position: PositionSnapshot, channel: ChannelSnapshot
                                    ) -> None:
    native = _native()
    assert native.position_record(position) == avro_writer.position_record(position)
    assert native.channel_record(channel) == avro_writer.channel_record(channel)
    # other shapes go through the reference: a field mapping, a list of contributions
    assert native.position_record(position._asdict()) == avro_writer.position_record(position)
    assert native.channel_record(channel.to_record()) == avro_writer.channel_record(channel)
    as_list = channel._replace(locations=list(channel.locations))
    assert native.channel_record(as_list) == avro_writer.channel_record(channel)


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1])
def test_a_number_beyond_an_avro_long_is_refused_by_both(number: int) -> None:
    position = PositionSnapshot("S", "L", number, 0, 0, 0, 0, 0, 0, 1, 0)
    for write in (_native().position_record, avro_writer.position_record):
        with pytest.raises(OverflowError, match="Avro long"):
            write(position)


@pytest.mark.parametrize("shuffled", [False, True], ids=["in order", "disordered"])
def test_benchmark_workload_decodes_and_encodes_identically(shuffled: bool) -> None:
    """The drain benchmark's events (3 DCs, 200 stores, its rules), folded in order and
    shuffled: every payload reads the same, every snapshot writes the same bytes."""
    native = _native()
    events = list(retail_workload(skus=2_000, seed=7).events(12_000))
    if shuffled:
        random.Random(3).shuffle(events)
    rules = load_rules(RULES_200_STORES)
    skus: dict[str, tuple[SkuInventory, SnapshotPublisher]] = {}
    positions = channels = 0
    now = 0
    for event in events:
        payload = encode_event(event)
        assert native.read_inventory_event(payload) == avro_reader.read_inventory_event(payload)
        inventory, publisher = skus.setdefault(event.sku, (SkuInventory(event.sku),
                                                           SnapshotPublisher()))
        now = max(now, event.occurred_at)
        result = inventory.apply_event(event, now)
        if result.status != "applied":
            continue
        position_out, channel_out = publisher.publish(inventory, result.touched, rules, now, now)
        for snapshot in position_out:
            assert native.position_record(snapshot) == avro_writer.position_record(snapshot)
        for channel_snapshot in channel_out:
            assert (native.channel_record(channel_snapshot)
                    == avro_writer.channel_record(channel_snapshot))
        positions += len(position_out)
        channels += len(channel_out)
    assert positions > 5_000 and channels > 5_000
