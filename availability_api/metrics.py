"""Prometheus metrics of the API replica: requests by method and status, latency, lag.

gRPC calls are counted by a wrapper around each handler, added where the service is
registered (``service.add_to_server``: no per-call interceptor chain), so the servicer
stays free of bookkeeping, under their method name and status code
(``GetAvailability``, ``OK``);
HTTP/JSON requests by the middleware of :mod:`http_api`, under ``http <VERB> <route>``
(``http GET availability``) and their HTTP status (``200``, ``400``), through
:func:`observe`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from availability_api.settings import listen_host

log = logging.getLogger("availability.api")

REQUESTS = Counter(
    "availability_api_requests",
    "Finished requests: gRPC by method and status code, HTTP by 'http VERB route' and "
    "HTTP status.",
    ["method", "code"],
)
LATENCY = Histogram(
    "availability_api_request_seconds",
    "Server-side latency by method (for a watch or an HTTP stream: its lifetime).",
    ["method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 300),
)
PROGRESS_COMMIT_FAILURES = Counter(
    "availability_api_progress_commit_failures",
    "Failed commits of the replica's progress to its consumer group (a report for lag "
    "tools: the store keeps the offsets that count).",
)
REPLICA_LAG = Gauge(
    "availability_api_replica_lag_records",
    "Snapshot records on the topics not yet applied to this replica's RocksDB.",
)


DEADLINE_SLACK = 0.1
"""Seconds before its deadline within which a cancelled call counts as DEADLINE_EXCEEDED."""


def _code(context: grpc.aio.ServicerContext, outcome: BaseException | None) -> str:
    """The status a finished call is counted under.

    grpc ends a call the client cancelled, or whose deadline passed, by cancelling the
    handler, without a code on the context: the deadline tells the two apart.
    """
    code = context.code()
    if code is not None:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if isinstance(outcome, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= DEADLINE_SLACK:
            return "DEADLINE_EXCEEDED"
        return "CANCELLED"
    return "OK" if outcome is None else "UNKNOWN"


def timed_unary(method: str, inner: Callable[..., Awaitable[Any]]
                ) -> Callable[..., Awaitable[Any]]:
    """``inner`` counted under ``method`` and its status code, and timed."""
    latency = LATENCY.labels(method)

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        outcome: BaseException | None = None
        try:
            return await inner(request, context)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            latency.observe(time.perf_counter() - started)
            REQUESTS.labels(method, _code(context, outcome)).inc()

    return call


def timed_stream(method: str, inner: Callable[..., AsyncIterator[Any]]
                 ) -> Callable[..., AsyncIterator[Any]]:
    """A response stream counted when it ends, timed over its lifetime."""
    latency = LATENCY.labels(method)

    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        outcome: BaseException | None = None
        try:
            async with aclosing(inner(request, context)) as responses:  # type: ignore[type-var]
                async for response in responses:
                    yield response
        except BaseException as exc:  # GeneratorExit: closed while a response was sent
            outcome = exc
            raise
        finally:
            latency.observe(time.perf_counter() - started)
            REQUESTS.labels(method, _code(context, outcome)).inc()

    return call


def observe(method: str, code: str, seconds: float) -> None:
    """Count one finished request (the HTTP front end's entry point)."""
    LATENCY.labels(method).observe(seconds)
    REQUESTS.labels(method, code).inc()


def serve(port: int, lag: Callable[[], float], host: str = "127.0.0.1") -> bool:
    """Expose /metrics on ``host:port`` (port 0: off); a busy port is logged, not fatal."""
    REPLICA_LAG.set_function(lag)
    if not port:
        return False
    address = listen_host(host)
    try:
        start_http_server(port, addr=address)
    except OSError as exc:
        log.warning("metrics not served: %s:%d: %s", host, port, exc)
        return False
    shown = f"[{address}]" if ":" in address else address
    log.info("metrics on http://%s:%d/metrics", shown, port)
    return True
