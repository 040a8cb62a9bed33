"""One source batch's events of one SKU, as they travel to the worker that owns the SKU.

Bytewax pickles every item that crosses to another process, one by one. An
``InventoryEvent`` (a NamedTuple holding an ``EventType`` member) with its
``SourceRecord`` took ~22 us to pickle and unpickle, as plain tuples ~5 us; and
grouping a batch's events by SKU roughly halves the items the exchange and the fold's
per-key calls see (a 2,000-record batch of the benchmark chain holds ~1,050 SKUs).
Within a process nothing is pickled: the list is handed on as it is.
"""

from __future__ import annotations

from availability_domain.events import EventType, InventoryEvent
from dataflows.kafka_source import SourceRecord

_EVENT_TYPES = {kind.value: kind for kind in EventType}


class SkuEvents(list[tuple[InventoryEvent, SourceRecord]]):
    """(event, origin) pairs of one SKU, in the order they were read."""

    __slots__ = ()

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return _sku_events, ([((event[0], event[1].value, *event[2:]), tuple(origin))
                              for event, origin in self],)


def _sku_events(rows: list[tuple[tuple[object, ...], tuple[object, ...]]]) -> SkuEvents:
    """Rebuild from :meth:`SkuEvents.__reduce__` (the exchange between processes names it)."""
    new = tuple.__new__
    types = _EVENT_TYPES
    return SkuEvents([(new(InventoryEvent, (row[0], types[row[1]], *row[2:])),  # type: ignore[index]
                       new(SourceRecord, origin))
                      for row, origin in rows])
