"""Wires the availability dataflow; the business rules live in ``availability_domain``.

    inventory.events -> decode + validate --bad--> inventory.events.dlq
                                 |
                  key by sku (a batch's events of a SKU travel together)
                                 |
           fold per SKU (positions, reservations, transfers, expiry timers)
                                 |
        changed position / channel snapshots -> availability.positions / .channels
"""

from __future__ import annotations

from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from availability_contracts.codec import Codec, dead_letter_payload
from availability_contracts.errors import InvalidEvent, shorten
from availability_contracts.schemas import DEAD_LETTER_SCHEMA
from availability_domain.events import InventoryEvent, check_event_time, decode_event
from availability_domain.inventory import SkuInventory
from availability_domain.rules import Rules, load_rules
from dataflows.kafka_sink import ConfirmedKafkaSink, KeyedRecords, OutgoingRecord
from dataflows.kafka_source import InventoryEventSource, SourceRecord
from dataflows.metrics import (
    DEAD_LETTERS,
    EVENTS,
    watch_registry,
)
from dataflows.settings import EngineSettings
from dataflows.sku_events import SkuEvents
from dataflows.sku_logic import RunContext, SkuAvailabilityLogic, StoredState, now_ms
from dataflows.snapshot_output import SnapshotOutput, snapshot_output

Decoded = tuple[str, SkuEvents] | list[OutgoingRecord]
"""A SKU's events of one batch, keyed by the SKU; or the batch's dead letters."""


def dead_letter(codec: Codec, dlq_topic: str, origin: SourceRecord, reason: str, code: str
                ) -> OutgoingRecord:
    """The DLQ record of a refused input, small enough to produce whatever its size."""
    original = dead_letter_payload(origin.key, origin.value)
    record = {
        "reason": reason,
        "reason_code": code,
        **original,
        "source_topic": origin.topic,
        "source_partition": origin.partition,
        "source_offset": origin.offset,
        "rejected_at": now_ms(),
    }
    DEAD_LETTERS.labels(code).inc()
    return OutgoingRecord(dlq_topic, original["original_key"],
                          codec.encode(DEAD_LETTER_SCHEMA, record, dlq_topic),
                          origin.timestamp_ms)


def decode(codec: Codec, dlq_topic: str, max_future_skew_ms: int, origin: SourceRecord
           ) -> InventoryEvent | OutgoingRecord:
    """The valid event of a record, or the record's dead letter."""
    try:
        event = decode_event(codec, origin.value)
        check_event_time(event, now_ms(), max_future_skew_ms)
    except InvalidEvent as exc:
        EVENTS.labels("unknown", "invalid").inc()
        return dead_letter(codec, dlq_topic, origin, str(exc), exc.code)
    except Exception as exc:  # a decoder bug must not stop the flow on one record
        EVENTS.labels("unknown", "invalid").inc()
        reason = f"cannot decode: {type(exc).__name__}: {shorten(str(exc), 200)}"
        return dead_letter(codec, dlq_topic, origin, reason, "undecodable")
    return event


def decode_batch(codec: Codec, dlq_topic: str, max_future_skew_ms: int,
                 records: list[SourceRecord]) -> list[Decoded]:
    """A source batch as its dead letters (one list) and, per SKU, its valid events
    keyed by the SKU (the fold's state key): one item per SKU rather than per event
    crosses to the SKU's worker (see :mod:`dataflows.sku_events`)."""
    dead: list[OutgoingRecord] = []
    by_sku: dict[str, SkuEvents] = {}
    for origin in records:
        event = decode(codec, dlq_topic, max_future_skew_ms, origin)
        if isinstance(event, OutgoingRecord):
            dead.append(event)
            continue
        group = by_sku.get(event.sku)
        if group is None:
            group = by_sku[event.sku] = SkuEvents()
        group.append((event, origin))
    out: list[Decoded] = list(by_sku.items())
    if dead:
        out.append(dead)
    return out


def is_keyed_event(item: Decoded) -> bool:
    return type(item) is tuple


def dead_letter_key(records: list[OutgoingRecord]) -> str:
    """Dead letters join the fold's keyed output, so the sink sees one shape and the
    hot path needs no un-keying step."""
    return "dead-letter"


def build_logic(settings: EngineSettings, context: RunContext, codec: Codec,
                output: SnapshotOutput, resume: bytes | None) -> SkuAvailabilityLogic:
    return SkuAvailabilityLogic(
        StoredState.parse(resume) if resume is not None else None,
        partial(SkuInventory, dedupe_horizon_ms=settings.dedupe_horizon_ms,
                lateness_horizon_ms=settings.lateness_horizon_ms),
        context,
        output,
        partial(dead_letter, codec, settings.topics.dlq),
    )


def build_flow(settings: EngineSettings, context: RunContext | Rules | None = None, *,
               source: Source[SourceRecord] | None = None,
               sink: Sink[KeyedRecords] | None = None) -> Dataflow:
    """The availability dataflow. ``source`` and ``sink`` default to the Kafka topics of
    ``settings``; tests pass Bytewax's testing source and sink to run it in process."""
    if context is None:
        context = load_rules(settings.rules_path)
    if isinstance(context, Rules):
        context = RunContext(context, context.fingerprint())
    codec = Codec(settings.schema_registry)
    watch_registry(codec)
    flow = Dataflow(settings.flow_id)
    if source is None:
        source = InventoryEventSource(settings.brokers, settings.topics.events,
                                      settings.batch_size)
    raw = op.input("events", flow, source)
    decoded = op.flat_map_batch("decode", raw, partial(decode_batch, codec, settings.topics.dlq,
                                                       settings.max_future_skew_ms))
    split = op.branch("valid", decoded, is_keyed_event)
    keyed: KeyedStream[SkuEvents] = split.trues  # type: ignore[assignment]
    output = snapshot_output(codec, settings.topics)
    folded = op.stateful_batch("fold", keyed,
                               partial(build_logic, settings, context, codec, output))
    rejected: Stream[list[OutgoingRecord]] = split.falses  # type: ignore[assignment]
    dead_letters = op.key_on("dlq_key", rejected, dead_letter_key)
    out = op.merge("all_output", folded, dead_letters)
    op.output("kafka", out, sink if sink is not None else ConfirmedKafkaSink(settings.brokers))
    return flow
