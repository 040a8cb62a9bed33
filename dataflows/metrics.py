"""Prometheus metrics of the engine (one endpoint per process; see docs/operations.md).

Counters are bumped once per batch with pre-aggregated counts, not per event: the fold
handles hundreds of thousands of events per second and a labelled ``inc()`` costs
about a microsecond.
"""

from __future__ import annotations

import sys
from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS = Counter(
    "availability_events",
    "Events read from the events topic, by event type and result "
    "(applied, duplicate, rejected: beyond a horizon, invalid: failed validation).",
    ["event_type", "result"],
)
DEAD_LETTERS = Counter(
    "availability_dead_letters",
    "Records written to the dead-letter topic, by reason class.",
    ["reason"],
)
SNAPSHOTS = Counter(
    "availability_snapshots",
    "Snapshots published, by kind (position, channel).",
    ["kind"],
)
FRESHNESS = Histogram(
    "availability_freshness_seconds",
    "Produce-to-snapshot latency: from the input record's Kafka timestamp to the "
    "broker's acknowledgement of the snapshot it caused (oldest input of the batch).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
INPUT_LAG = Gauge(
    "availability_input_lag_messages",
    "Messages of the events topic not yet read, per partition.",
    ["partition"],
)

_REASON_CLASSES = (
    ("cannot decode", "undecodable"),
    ("empty message value", "undecodable"),
    ("schema-registry header", "undecodable"),
    ("unknown event_type", "unknown_type"),
    ("missing required field", "missing_field"),
    ("requires field", "missing_field"),
    ("quantity must", "quantity"),
    ("key delimiter", "id_delimiter"),
    ("horizon", "too_late"),
)


def reason_class(reason: str) -> str:
    """A bounded label for a free-text DLQ reason."""
    for fragment, label in _REASON_CLASSES:
        if fragment in reason:
            return label
    return "invalid"


_EVENT_CHILDREN: dict[tuple[str, str], Counter] = {}


def count_events(tally: Tally[tuple[str, str]]) -> None:
    for labels, count in tally.items():
        child = _EVENT_CHILDREN.get(labels)
        if child is None:
            child = _EVENT_CHILDREN[labels] = EVENTS.labels(*labels)
        child.inc(count)


def serve(port: int) -> bool:
    """Expose /metrics on ``port`` (0: do not serve).

    A busy port is reported, not fatal: losing the metrics endpoint must not stop the
    availability numbers.
    """
    if not port:
        return False
    try:
        start_http_server(port)
    except OSError as exc:
        print(f"engine: metrics not served: port {port}: {exc}", file=sys.stderr, flush=True)
        return False
    print(f"engine: metrics on http://127.0.0.1:{port}/metrics", flush=True)
    return True
