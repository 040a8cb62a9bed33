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
POSITION_SNAPSHOTS = SNAPSHOTS.labels("position")
CHANNEL_SNAPSHOTS = SNAPSHOTS.labels("channel")
CHANNEL_TOMBSTONES = SNAPSHOTS.labels("channel_tombstone")
"""Bound once: every call of a SKU's logic counts its snapshots."""
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

PROGRESS_COMMIT_FAILURES = Counter(
    "availability_progress_commit_failures",
    "Failed commits of the engine's progress to its consumer group (a report for lag tools: "
    "the recovery snapshots keep the offsets that count).",
)
REGISTRY_RETRIES = Counter(
    "availability_registry_retries",
    "Schema registry requests that failed in a way worth retrying (no answer, 5xx, 401); "
    "the step waits with backoff and no record is dead-lettered or lost meanwhile.",
)
REGISTRY_FAILING = Gauge(
    "availability_registry_failing",
    "1 while the schema registry is being retried, 0 once it answers again.",
)


def watch_registry(codec: object) -> None:
    """Count registry retries and say, without credentials, what is being waited for."""
    from availability_contracts.codec import Codec, RegistryError

    if not isinstance(codec, Codec) or codec.registry is None:
        return

    def on_retry(error: RegistryError, attempt: int) -> None:
        REGISTRY_RETRIES.inc()
        REGISTRY_FAILING.set(1)
        if attempt == 1 or attempt % 10 == 0:
            print(f"engine: schema registry not answering (attempt {attempt}), retrying: "
                  f"{error}", file=sys.stderr, flush=True)

    codec.retries.on_retry.append(on_retry)
    codec.retries.on_success.append(lambda: REGISTRY_FAILING.set(0))


_EVENT_CHILDREN: dict[tuple[str, str], Counter] = {}


def count_events(tally: Tally[tuple[str, str]]) -> None:
    for labels, count in tally.items():
        child = _EVENT_CHILDREN.get(labels)
        if child is None:
            child = _EVENT_CHILDREN[labels] = EVENTS.labels(*labels)
        child.inc(count)


def member_port(base: int, process_id: int | None, supervised: bool) -> int:
    """The /metrics port of a member: ``--processes`` members share a host, so member
    ``i`` serves ``base + i``; a member started with ``--addresses`` has its host (or
    pod) to itself and serves ``base``, so one probe and one scrape rule fit all."""
    if not base:
        return 0
    return base + (process_id or 0) if supervised else base


def serve(port: int, host: str = "127.0.0.1") -> bool:
    """Expose /metrics on ``host:port`` (0: do not serve); loopback unless told otherwise,
    since the numbers and labels are nobody else's business by default.

    A busy port is reported, not fatal: losing the metrics endpoint must not stop the
    availability numbers.
    """
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        print(f"engine: metrics not served: {host}:{port}: {exc}", file=sys.stderr, flush=True)
        return False
    print(f"engine: metrics on http://{host}:{port}/metrics", flush=True)
    return True
