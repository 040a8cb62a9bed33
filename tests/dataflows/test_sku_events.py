"""A SKU's events cross between engine processes pickled as plain rows: nothing lost."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from availability_domain.events import EventType, InventoryEvent
from dataflows.kafka_source import SourceRecord
from dataflows.sku_events import SkuEvents

ids = st.text(min_size=1, max_size=12)
times = st.integers(min_value=0, max_value=253_402_300_799_999)
maybe = st.none() | ids
events = st.builds(
    InventoryEvent, ids, st.sampled_from(list(EventType)), times, ids, ids, ids,
    st.integers(min_value=-10**9, max_value=10**9), maybe, maybe, maybe, maybe, maybe,
    st.none() | times, st.booleans())
origins = st.builds(SourceRecord, st.just("inventory.events"), st.integers(0, 63),
                    st.integers(0, 2**62), st.none() | st.binary(max_size=16),
                    st.none() | st.binary(max_size=64), times)


@given(st.lists(st.tuples(events, origins), max_size=20))
def test_a_pickled_group_comes_back_equal_with_the_domain_types(
        pairs: list[tuple[InventoryEvent, SourceRecord]]) -> None:
    group = SkuEvents(pairs)
    restored = pickle.loads(pickle.dumps(group))
    assert type(restored) is SkuEvents
    assert restored == group
    for (event, origin), (original, original_origin) in zip(restored, pairs, strict=True):
        assert type(event) is InventoryEvent and type(origin) is SourceRecord
        assert event.event_type is original.event_type  # the member, not its string
        assert event.position_key == original.position_key
        assert origin.timestamp_ms == original_origin.timestamp_ms
