"""The compiled publisher (native/domain) gives what the reference gives: the same
records, byte for byte and in the same order, from :meth:`SnapshotPublisher.publish`
followed by :func:`encode_snapshots`, on random disordered streams and on the benchmark
workload; and its recovery snapshot restores into either implementation."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availability.retail_day import retail_workload
from availability_contracts.codec import Codec
from availability_contracts.times import DAY_MS, MINUTE_MS
from availability_contracts.topics import TopicNames
from availability_domain.events import InventoryEvent, parse_event
from availability_domain.inventory import SkuInventory
from availability_domain.rules import ChannelRule, Location, Rules, load_rules, parse_rules
from availability_domain.snapshots import (
    SnapshotPublisher,
    _publisher_blob,
    pack_publisher,
    unpack_publisher,
)
from benchmarks.rules import RULES_200_STORES
from dataflows import snapshot_output
from dataflows.kafka_sink import OutgoingRecord
from dataflows.snapshot_output import (
    CompiledSnapshotOutput,
    Publisher,
    SnapshotOutput,
    encode_snapshots,
)
from tests.availability_domain.test_properties import NOW, RULES, T0, event_sets

TOPICS = TopicNames()


class FramedCodec(Codec):
    """A codec whose payloads carry a registry header, without a registry to ask."""

    def header(self, schema: str, topic: str) -> bytes:
        return b"\x00\x00\x00\x00" + bytes([len(topic) % 256])


def test_the_install_built_the_compiled_publisher() -> None:
    if os.environ.get("AVAILABILITY_PURE_PYTHON", "") not in ("", "0"):
        assert snapshot_output.IMPLEMENTATION == "python"
        return
    assert snapshot_output.IMPLEMENTATION == "compiled", (
        "native/domain was not built: `make setup` builds it with cargo")


compiled_only = pytest.mark.skipif(
    snapshot_output.IMPLEMENTATION != "compiled",
    reason="AVAILABILITY_PURE_PYTHON=1: nothing compiled to compare")


class Versions:
    """Versions from a counter that jumps, so a version is never its key's count."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self, previous: int) -> int:
        self.last += 7
        return max(previous + 1, self.last)


class Twin:
    """One SKU folded twice, published by the reference and by the compiled publisher."""

    def __init__(self, sku: str, rules: Rules, codec: Codec) -> None:
        self.rules = rules
        self.sides: list[tuple[SnapshotOutput, SkuInventory, Publisher, Versions]] = []
        for output in (SnapshotOutput(lambda p, c, d, o: encode_snapshots(codec, TOPICS, p, c,
                                                                          d, o)),
                       CompiledSnapshotOutput(codec, TOPICS)):
            self.sides.append((output, SkuInventory(sku), output.new_publisher(), Versions()))

    def apply(self, events: list[InventoryEvent], now: int, forced: set[str],
              origin_ms: int) -> list[OutgoingRecord]:
        results = []
        for output, inventory, publisher, versions in self.sides:
            touched: set[str] = set()
            for event in events:
                outcome = inventory.apply_event(event, now)
                touched.update(outcome.touched)
            results.append(output.publish(publisher, inventory, touched, self.rules, now,
                                          versions, forced, origin_ms))
        reference, compiled = results
        assert compiled == reference
        return reference

    def snapshot(self) -> None:
        """Both sides pickle to the same bytes (the compiled side patches the blob it
        kept from its last snapshot where records changed)."""
        pickles = [pickle.dumps(publisher) for _, _, publisher, _ in self.sides]
        assert pickles[1] == pickles[0]

    def restore(self) -> None:
        """Each side continues from a pickle of its own publisher, loaded as the engine
        loads a recovery snapshot; either side's pickle restores into the other too."""
        pickles = [pickle.dumps(publisher) for _, _, publisher, _ in self.sides]
        assert pickles[1] == pickles[0]
        self.sides = [(output, pickle.loads(pickle.dumps(inventory)),
                       output.adopt(output.loads(pickled)), versions)
                      for (output, inventory, _, versions), pickled in zip(self.sides, pickles,
                                                                           strict=True)]
        crossed = [output.adopt(output.loads(pickled))
                   for (output, _, _, _), pickled in zip(self.sides, reversed(pickles),
                                                         strict=True)]
        assert _state(crossed[0]) == _state(self.sides[0][2])
        assert _state(crossed[1]) == _state(self.sides[1][2])
        assert isinstance(self.sides[1][2], snapshot_output._native.CompiledPublisher)

    def republish(self, rules: Rules, now: int, everything: bool) -> None:
        results = []
        sides = []
        for output, inventory, publisher, versions in self.sides:
            publisher, records = output.republish(publisher, inventory, rules, now, versions,
                                                  everything, -1)
            results.append(records)
            sides.append((output, inventory, publisher, versions))
        self.sides = sides
        self.rules = rules
        assert results[1] == results[0]

    def published(self) -> list[Any]:
        return [_state(publisher) for _, _, publisher, _ in self.sides]


def _state(publisher: Publisher) -> tuple[Any, Any]:
    reference = publisher if isinstance(publisher, SnapshotPublisher) else \
        publisher.to_reference()  # type: ignore[attr-defined]
    return reference.positions, reference.channels


OTHER_RULES = parse_rules({
    "locations": {"DC1": {"type": "dc"}, "S1": {"type": "store", "tags": ["pickup"]}},
    "channels": {"web": {"location_types": ["dc", "store"], "allocation": 0.33},
                 "pickup": {"location_tags": ["pickup"], "per_location": True}},
}, "other-rules")


@compiled_only
@settings(max_examples=250, deadline=None)
@given(data=st.data(), events=event_sets())
def test_compiled_records_equal_the_reference_on_disordered_streams(
        data: st.DataObject, events: list[InventoryEvent]) -> None:
    order = data.draw(st.permutations(events), label="order")
    codec = data.draw(st.sampled_from([Codec(), FramedCodec()]), label="codec")
    twins: dict[str, Twin] = {}
    now = T0
    at = 0
    while at < len(order):
        take = data.draw(st.integers(1, 6), label="batch")
        batch, at = order[at:at + take], at + take
        now = min(NOW + 5_000, now + data.draw(st.integers(0, 900_000), label="clock"))
        by_sku: dict[str, list[InventoryEvent]] = {}
        for event in batch:
            by_sku.setdefault(event.sku, []).append(event)
        for sku, group in by_sku.items():
            twin = twins.setdefault(sku, Twin(sku, RULES, codec))
            known = sorted({event.location_id for event in group} | {"X9", "DC1"})
            forced = set(data.draw(st.lists(st.sampled_from(known), max_size=2),
                                   label="forced"))
            twin.apply(group, now, forced, data.draw(st.integers(-1, 10**12), label="origin"))
            step = data.draw(st.sampled_from(["go on", "snapshot", "restore", "republish"]),
                             label="step")
            if step == "snapshot":
                twin.snapshot()
            elif step == "restore":
                twin.restore()
            elif step == "republish":
                twin.republish(data.draw(st.sampled_from([RULES, OTHER_RULES])), now,
                               data.draw(st.booleans(), label="everything"))
    for twin in twins.values():
        twin.apply([], NOW + 10_000, set(), -1)  # every expiry due
        reference, compiled = twin.published()
        assert compiled == reference


def _event(kind: str, quantity: int, location: str = "DC1", at: int = 0, **fields: Any
           ) -> InventoryEvent:
    return parse_event({"event_id": f"{kind}-{quantity}-{location}-{at}", "event_type": kind,
                        "occurred_at": T0 + at, "source": "t", "sku": "A",
                        "location_id": location, "quantity": quantity, **fields})


@compiled_only
@pytest.mark.parametrize("quantity", [2**31, 2**62, 2**63 - 1, 2**63, -(2**63), 2**100])
def test_numbers_beyond_32_and_64_bits_saturate_and_pickle_as_the_reference(
        quantity: int) -> None:
    twin = Twin("A", RULES, Codec())
    twin.apply([_event("RECEIPT", 5, "DC1"), _event("RECEIPT", 5, "S1"),
                _event("RECEIPT", 5, "DC2")], T0, set(), 5)
    twin.snapshot()  # kept narrow: the wide records below replace them
    for _, inventory, _, _ in twin.sides:
        inventory.positions["DC1"].base = quantity
        inventory.positions["S1"].reserved = quantity
        inventory.positions["DC2"].in_transit = quantity
    twin.apply([], T0, {"DC1", "S1", "DC2"}, 5)
    twin.snapshot()
    twin.restore()
    twin.apply([_event("SALE", 3, "DC1", 9)], T0, set(), 5)
    twin.snapshot()
    for _, inventory, _, _ in twin.sides:
        inventory.positions["DC1"].base = 9
    twin.apply([], T0, {"DC1"}, 5)  # narrow again
    twin.snapshot()
    reference, compiled = twin.published()
    assert compiled == reference


@compiled_only
def test_a_damaged_position_record_is_refused_with_its_length() -> None:
    with pytest.raises(ValueError, match=r"of 10 bytes \(40 or 64 expected\)"):
        snapshot_output._native.CompiledPublisher.from_records({"DC1": b"x" * 10}, {})


def _published_blob() -> bytes:
    twin = Twin("A", RULES, Codec())
    twin.apply([_event("RECEIPT", 5, "DC1"), _event("RECEIPT", 7, "S1")], T0, set(), 5)
    reference = twin.sides[0][2]
    assert isinstance(reference, SnapshotPublisher)
    return pack_publisher(reference._position_records, reference.channels)


@compiled_only
@pytest.mark.parametrize("cut", [1, 9, 20, -1])
def test_a_publisher_snapshot_cut_short_is_refused_by_both(cut: int) -> None:
    data = _published_blob()[:cut]
    with pytest.raises(ValueError, match="ends"):
        unpack_publisher(data)
    with pytest.raises(ValueError, match="ends early"):
        snapshot_output._native.CompiledPublisher.from_blob(data)


@compiled_only
def test_a_publisher_snapshot_with_trailing_bytes_is_refused_by_both() -> None:
    data = _published_blob() + b"\0"
    with pytest.raises(ValueError, match="1 bytes after its end"):
        unpack_publisher(data)
    with pytest.raises(ValueError, match="1 bytes after its end"):
        snapshot_output._native.CompiledPublisher.from_blob(data)


@pytest.mark.parametrize("location", ["L" * 253, "L" * 254, "L" * 70_000, "Zürich-ß"])
def test_a_publisher_snapshot_holds_any_location_id(location: str) -> None:
    records = {location: b"r" * 40, "DC1": b"w" * 64}
    channels: dict[Any, Any] = {("web", None): ((3, T0), 9), ("pickup", location): ((-1, 0), 2)}
    assert unpack_publisher(pack_publisher(records, channels)) == (records, channels)
    if snapshot_output._native is not None:
        compiled = snapshot_output._native.CompiledPublisher.from_blob(
            pack_publisher({location: records["DC1"]}, channels))
        assert pickle.dumps(compiled) == pickle.dumps(compiled.to_reference())


@compiled_only
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_damaged_publisher_snapshots_are_refused_alike(data: st.DataObject) -> None:
    """Random damage (bytes flipped, cut, inserted): both readers refuse it with a
    ValueError, or both read the same state."""
    blob = bytearray(_published_blob())
    for _ in range(data.draw(st.integers(1, 4), label="damages")):
        at = data.draw(st.integers(0, len(blob)), label="at")
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]), label="kind")
        if kind == "flip" and at < len(blob):
            blob[at] = data.draw(st.integers(0, 255), label="byte")
        elif kind == "cut":
            del blob[at:]
        else:
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
    damaged = bytes(blob)
    try:
        expected: Any = _state(_publisher_blob(damaged))
    except ValueError:
        expected = ValueError
    try:
        compiled = snapshot_output._native.CompiledPublisher.from_blob(damaged)
    except ValueError:
        assert expected is ValueError
    else:
        assert _state(compiled) == expected


def test_a_channel_number_beyond_64_bits_pickles_in_the_dict_format() -> None:
    publisher = SnapshotPublisher(channels={("web", None): ((2**64, T0), 1)})
    restored = pickle.loads(pickle.dumps(publisher))
    assert b"_publisher_records" in pickle.dumps(publisher)
    assert restored.channels == publisher.channels


@compiled_only
def test_a_position_beyond_128_bits_goes_through_the_reference_quantities() -> None:
    twin = Twin("A", RULES, Codec())
    twin.apply([_event("RECEIPT", 1, "DC1")], T0, set(), 0)
    for _, inventory, _, _ in twin.sides:
        inventory.positions["DC1"].delta_sum = -(2**140)
    twin.apply([], T0, {"DC1"}, 0)
    reference, compiled = twin.published()
    assert compiled == reference


@compiled_only
def test_an_allocation_beyond_128_bits_uses_the_reference_formula() -> None:
    rules = Rules(locations={"DC1": Location("DC1", "dc")}, channels={
        "web": ChannelRule("web", location_types=frozenset({"dc"}),
                           allocation=Fraction(2**100 - 1, 2**100))})
    twin = Twin("A", rules, Codec())
    twin.apply([_event("RECEIPT", 5, "DC1")], T0, set(), 0)
    for _, inventory, _, _ in twin.sides:
        inventory.positions["DC1"].base = 2**62
    twin.apply([], T0, {"DC1"}, 0)
    reference, compiled = twin.published()
    assert compiled == reference
    assert compiled[1][("web", None)][0][0] == 2**62 + 4  # floor((2**62 + 5) * (1 - 2**-100))


def _workload(events: int) -> Iterator[InventoryEvent]:
    start_ms = (T0 - DAY_MS) // MINUTE_MS * MINUTE_MS
    return retail_workload(skus=2_000, stores=200, seed=7, start_ms=start_ms,
                           expiring=True).events(events)


@compiled_only
def test_compiled_records_equal_the_reference_on_the_benchmark_workload() -> None:
    rules = load_rules(RULES_200_STORES)
    codec = Codec()
    twins: dict[str, Twin] = {}
    batch: dict[str, list[InventoryEvent]] = {}
    records = 0
    for number, event in enumerate(_workload(40_000), 1):
        batch.setdefault(event.sku, []).append(event)
        if number % 4_000 == 0:
            for sku, group in batch.items():
                twin = twins.setdefault(sku, Twin(sku, rules, codec))
                records += len(twin.apply(group, T0 + number, set(), number))
            batch.clear()
    assert records > 40_000
    for twin in twins.values():
        reference, compiled = twin.published()
        assert compiled == reference
