"""Wires the availability dataflow; the business rules live in ``dataflows.domain``.

    inventory.events -> decode + validate --bad--> inventory.events.dlq
                                 |
                              key by sku
                                 |
           fold per SKU (positions, reservations, transfers, expiry timers)
                                 |
        changed position / channel snapshots -> availability.positions / .channels
"""

from __future__ import annotations

import pickle
from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import KeyedStream

from availability.codec import CHANNEL_SCHEMA, DEAD_LETTER_SCHEMA, POSITION_SCHEMA, Codec
from dataflows.domain.events import InvalidEvent, InventoryEvent
from dataflows.domain.inventory import SkuInventory
from dataflows.domain.rules import Rules, load_rules
from dataflows.domain.snapshots import ChannelSnapshot, PositionSnapshot
from dataflows.kafka_sink import ConfirmedKafkaSink, OutgoingRecord
from dataflows.kafka_source import InventoryEventSource, SourceRecord
from dataflows.metrics import DEAD_LETTERS, EVENTS, SNAPSHOTS, reason_class
from dataflows.settings import EngineSettings
from dataflows.sku_logic import SkuAvailabilityLogic, SkuState, now_ms

Decoded = tuple[str, tuple[InventoryEvent, SourceRecord]] | OutgoingRecord


def dead_letter(codec: Codec, dlq_topic: str, origin: SourceRecord, reason: str
                ) -> OutgoingRecord:
    record = {
        "reason": reason,
        "original_key": origin.key,
        "original_value": origin.value,
        "source_topic": origin.topic,
        "source_partition": origin.partition,
        "source_offset": origin.offset,
        "rejected_at": now_ms(),
    }
    DEAD_LETTERS.labels(reason_class(reason)).inc()
    return OutgoingRecord(dlq_topic, origin.key,
                          codec.encode(DEAD_LETTER_SCHEMA, record, dlq_topic),
                          origin.timestamp_ms)


def decode(codec: Codec, dlq_topic: str, origin: SourceRecord) -> Decoded:
    """A valid event comes out already keyed by its SKU (the fold's state key), saving a
    separate key_on step on the hot path; an invalid one as its dead letter."""
    try:
        event = codec.decode_event(origin.value)
    except InvalidEvent as exc:
        EVENTS.labels("unknown", "invalid").inc()
        return dead_letter(codec, dlq_topic, origin, str(exc))
    return event.sku, (event, origin)


def is_keyed_event(item: Decoded) -> bool:
    return type(item) is not OutgoingRecord


def dead_letter_key(record: OutgoingRecord) -> str:
    """Dead letters join the fold's keyed output, so the sink sees one shape and the
    hot path needs no un-keying step."""
    return "dead-letter"


def encode_snapshots(codec: Codec, settings: EngineSettings, positions: list[PositionSnapshot],
                     channels: list[ChannelSnapshot], origin_ms: int) -> list[OutgoingRecord]:
    topics = settings.topics
    out = [
        OutgoingRecord(topics.positions, snap.key,
                       codec.encode(POSITION_SCHEMA, snap, topics.positions),
                       origin_ms)
        for snap in positions
    ]
    out.extend(
        OutgoingRecord(topics.channels, snap.key,
                       codec.encode(CHANNEL_SCHEMA, snap, topics.channels),
                       origin_ms)
        for snap in channels
    )
    SNAPSHOTS.labels("position").inc(len(positions))
    SNAPSHOTS.labels("channel").inc(len(channels))
    return out


def build_logic(settings: EngineSettings, rules: Rules, codec: Codec,
                resume: bytes | None) -> SkuAvailabilityLogic:
    state: SkuState | None = pickle.loads(resume) if resume is not None else None
    return SkuAvailabilityLogic(
        state,
        partial(SkuInventory, dedupe_horizon_ms=settings.dedupe_horizon_ms,
                lateness_horizon_ms=settings.lateness_horizon_ms),
        rules,
        partial(encode_snapshots, codec, settings),
        partial(dead_letter, codec, settings.topics.dlq),
    )


def build_flow(settings: EngineSettings, rules: Rules | None = None) -> Dataflow:
    rules = rules if rules is not None else load_rules(settings.rules_path)
    codec = Codec(settings.schema_registry)
    flow = Dataflow(settings.flow_id)
    source = InventoryEventSource(settings.brokers, settings.topics.events, settings.batch_size)
    raw = op.input("events", flow, source)
    decoded = op.map("decode", raw, partial(decode, codec, settings.topics.dlq))
    split = op.branch("valid", decoded, is_keyed_event)
    keyed: KeyedStream[tuple[InventoryEvent, SourceRecord]] = split.trues  # type: ignore[assignment]
    folded = op.stateful_batch("fold", keyed, partial(build_logic, settings, rules, codec))
    dead_letters = op.key_on("dlq_key", split.falses, dead_letter_key)
    out = op.merge("all_output", folded, dead_letters)
    op.output("kafka", out, ConfirmedKafkaSink(settings.brokers))
    return flow
