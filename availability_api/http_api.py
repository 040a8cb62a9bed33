"""HTTP/JSON reads for clients that do not speak gRPC (storefronts, scripts, curl).

Served by the API process next to gRPC, on the same asyncio loop (aiohttp), answering
from the same :class:`Lookups`, so the request rules, the limits and the numbers are
those of the gRPC service:

* ``GET /v1/availability/{channel}/{sku}[?location_id=L]``: GetAvailability;
* ``POST /v1/availability/{channel}:batchGet`` with ``{"skus": [...], "location_id":
  "L"}``: BatchGetAvailability (1 to 1,000 SKUs, results in request order);
* ``GET /v1/positions/{sku}[?location_id=L&location_id=M]``: ListPositions;
* ``GET /v1/availability/{channel}/stream?sku=A&sku=B[&location_id=L]``:
  WatchAvailability as server-sent events;
* ``GET /healthz``: 200 while the process runs; ``GET /readyz``: 200 while gRPC health
  is SERVING (caught up, not shutting down), else 503.

Bodies are the protobuf responses in JSON with the ``.proto`` field names, int64 as
JSON numbers and a pooled channel's ``location_id`` as ``null``. Ids in the path are
percent-decoded (a SKU ``A/B`` is ``A%2FB``); a SKU named ``stream`` can only be read
with ``:batchGet``. A refused request is ``{"error": {"status", "code", "message"}}``
with 400 (bad input; the message quotes at most a short prefix of what was sent), 404
(unknown channel or path), 405, 413 (body over 4 MiB) or 503 (shutting down).

The stream sends one ``data:`` event per value (``initial: true`` for the current
values, then each change), a ``: keepalive`` comment after ``sse_keepalive_seconds``
without a change, and ``event: shutdown`` when the replica stops (an EventSource then
reconnects, through the balancer to another replica).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing, suppress
from typing import Any

from aiohttp import web

from availability_api import metrics
from availability_api.feed import FeedClosed
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.lookups import Lookups, UnknownChannel
from availability_api.settings import listen_host
from availability_api.validation import InvalidRequest, quoted

log = logging.getLogger("availability.api.http")

MAX_BODY = 4 * 1024 * 1024
"""Largest request body, as gRPC's default largest received message."""
MAX_REQUEST_LINE = 64 * 1024
"""Longest request line: room for a stream of 1,000 short SKUs in its query string."""
METHOD_LABELS = {  # route name -> the `method` label of the request metrics
    "get": "http GET availability",
    "batch_get": "http POST availability:batchGet",
    "positions": "http GET positions",
    "stream": "http GET availability/stream",
}  # probes (healthz, readyz) are not counted, like gRPC health
UNROUTED = "http unrouted"  # bounded labels: neither the path nor the verb
CLIENT_GONE = 499  # counted for a request whose client left before the answer


# --- JSON ----------------------------------------------------------------------------


def channel_json(value: pb.ChannelAvailability) -> dict[str, Any]:
    return {
        "channel": value.channel,
        "sku": value.sku,
        "location_id": value.location_id or None,
        "found": value.found,
        "ats": value.ats,
        "as_of": value.as_of,
        "version": value.version,
        "computed_at": value.computed_at,
        "locations": [{"location_id": part.location_id, "ats": part.ats,
                       "in_transit": part.in_transit} for part in value.locations],
    }


def position_json(value: pb.PositionAvailability) -> dict[str, Any]:
    return {
        "sku": value.sku, "location_id": value.location_id, "on_hand": value.on_hand,
        "unsellable": value.unsellable, "reserved": value.reserved,
        "in_transit": value.in_transit, "safety_stock": value.safety_stock,
        "ats": value.ats, "as_of": value.as_of, "version": value.version,
        "computed_at": value.computed_at,
    }


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def _json(payload: Any, status: int = 200,
          headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers, dumps=_dumps)


def _error(status: int, code: str, message: str,
           headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"error": {"status": status, "code": code, "message": message}}, status,
                 headers)


# --- request parsing -----------------------------------------------------------------


def _query(request: web.Request, repeatable: Mapping[str, bool]) -> dict[str, list[str]]:
    """The query parameters, each known to the endpoint and given once unless
    ``repeatable`` says it may repeat."""
    query = request.query
    values: dict[str, list[str]] = {}
    for name in query:
        if name in values:
            continue
        if name not in repeatable:
            expected = ", ".join(repeatable) or "none"
            raise InvalidRequest(
                f"unknown query parameter {quoted(name)} (this endpoint takes: {expected})")
        values[name] = query.getall(name)
        if len(values[name]) > 1 and not repeatable[name]:
            raise InvalidRequest(f"{name} is given {len(values[name])} times: give it once")
    return values


def _one(query: Mapping[str, list[str]], name: str) -> str:
    return query.get(name, [""])[0]


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


async def _batch_body(request: web.Request) -> tuple[list[str], str]:
    """``skus`` and ``location_id`` of a batchGet body."""
    raw = await request.read()  # over MAX_BODY: HTTPRequestEntityTooLarge (413)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = str(exc)[:200] if isinstance(exc, ValueError) else "nested too deeply"
        raise InvalidRequest(f"the body ({len(raw)} bytes) is not JSON: {reason}") from None
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be a JSON object: {"skus": [...], '
                             f'"location_id": "..."}}, not {_json_type(body)}')
    for field in body:
        if field not in ("skus", "location_id"):
            raise InvalidRequest(
                f"unknown field {quoted(field)} in the body (fields: skus, location_id)")
    skus = body.get("skus", [])
    if not isinstance(skus, list):
        raise InvalidRequest(f"skus must be a list of strings, not {_json_type(skus)}")
    for index, sku in enumerate(skus):
        if not isinstance(sku, str):
            raise InvalidRequest(f"skus[{index}] must be a string, not {_json_type(sku)}")
    location_id = body.get("location_id")
    if location_id is not None and not isinstance(location_id, str):
        raise InvalidRequest(f"location_id must be a string, not {_json_type(location_id)}")
    return skus, location_id or ""


# --- the application -----------------------------------------------------------------


class HttpApi:
    """The aiohttp application over ``lookups``; ``ready()`` mirrors gRPC health."""

    def __init__(self, lookups: Lookups, ready: Callable[[], bool], *,
                 keepalive_seconds: float = 15.0) -> None:
        self.lookups = lookups
        self.ready = ready
        self.keepalive_seconds = keepalive_seconds
        self._streaming: set[int] = set()  # id() of requests whose stream has begun

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY)
        routes = [  # the stream before {sku}: "stream" is not read as a SKU
            web.get("/v1/availability/{channel}/stream", self.stream, name="stream",
                    allow_head=False),
            web.get("/v1/availability/{channel}/{sku}", self.get, name="get",
                    allow_head=False),
            web.post("/v1/availability/{channel}:batchGet", self.batch_get,
                     name="batch_get"),
            web.get("/v1/positions/{sku}", self.positions, name="positions",
                    allow_head=False),
            web.get("/healthz", self.healthz, name="healthz"),
            web.get("/readyz", self.readyz, name="readyz"),
        ]
        app.add_routes(routes)
        return app

    # middleware: errors as JSON, metrics ---------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        route = request.match_info.route.name
        method = UNROUTED if route is None else METHOD_LABELS.get(route)
        started = time.perf_counter()
        status = 500
        try:
            response = await self._answer(request, handler)
            status = response.status
            return response
        except asyncio.CancelledError:  # the client went away (or the shutdown ran out)
            status = 200 if id(request) in self._streaming else CLIENT_GONE
            raise
        finally:
            self._streaming.discard(id(request))
            if method is not None:
                metrics.observe(method, str(status), time.perf_counter() - started)

    async def _answer(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except InvalidRequest as error:
            return _error(400, error.code, str(error))
        except UnknownChannel as error:
            return _error(404, error.code, str(error))
        except FeedClosed:
            return _error(503, "unavailable", "replica is shutting down")
        except web.HTTPException as exc:  # no route, wrong verb, body too large
            if exc.status == 404:
                message = (f"no endpoint at {request.method} "
                           f"{quoted(request.rel_url.raw_path)} (the reads are under "
                           "/v1/availability/ and /v1/positions/)")
            elif exc.status == 405:
                message = f"{request.method} is not allowed here"
            elif exc.status == 413:
                message = f"the body is larger than {MAX_BODY} bytes"
            else:
                message = exc.reason
            code = exc.reason.lower().replace(" ", "_")
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _error(exc.status, code, message, allow)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.rel_url.raw_path[:200])
            return _error(500, "internal", "internal error")

    # handlers ------------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.Response:
        query = _query(request, {"location_id": False})
        answer = self.lookups.get(request.match_info["channel"], request.match_info["sku"],
                                  _one(query, "location_id"))
        return _json({"availability": channel_json(answer.availability),
                      "replica_lag": answer.replica_lag})

    async def batch_get(self, request: web.Request) -> web.Response:
        _query(request, {})
        skus, location_id = await _batch_body(request)
        answer = self.lookups.batch_get(request.match_info["channel"], skus, location_id)
        return _json({"results": [channel_json(value) for value in answer.results],
                      "replica_lag": answer.replica_lag})

    async def positions(self, request: web.Request) -> web.Response:
        query = _query(request, {"location_id": True})
        answer = self.lookups.list_positions(request.match_info["sku"],
                                             query.get("location_id", []))
        return _json({"positions": [position_json(value) for value in answer.positions],
                      "replica_lag": answer.replica_lag})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return _json({"status": "SERVING"})
        return _json({"status": "NOT_SERVING"}, 503)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        query = _query(request, {"sku": True, "location_id": False})
        watch = self.lookups.watch(request.match_info["channel"], query.get("sku", []),
                                   _one(query, "location_id"),
                                   idle_timeout=self.keepalive_seconds)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        })
        try:
            await response.prepare(request)
            self._streaming.add(id(request))
            async with aclosing(watch.responses()) as responses:
                async for message in responses:
                    if message is None:
                        await response.write(b": keepalive\n\n")
                        continue
                    event = {"availability": channel_json(message.availability),
                             "replica_lag": message.replica_lag, "initial": message.initial}
                    await response.write(f"data: {_dumps(event)}\n\n".encode())
        except FeedClosed:
            response.force_close()
            shutdown = {"error": {"status": 503, "code": "unavailable", "message":
                                  "replica is shutting down; reconnect to another replica"}}
            with suppress(ConnectionError):
                await response.write(f"event: shutdown\ndata: {_dumps(shutdown)}\n\n".encode())
        except ConnectionError:  # the client went away between two events
            pass
        finally:
            watch.close()
        return response


# --- the listening side --------------------------------------------------------------


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; ``[::]``, ``::`` or an empty host is every
    interface, IPv6 and IPv4 on one socket (so port 0 is one port, as for gRPC)."""
    address = listen_host(host)
    try:
        if address in ("", "::"):
            if socket.has_dualstack_ipv6():
                return socket.create_server(("::", port), family=socket.AF_INET6,
                                            dualstack_ipv6=True)
            return socket.create_server(("0.0.0.0", port))
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((address, port), family=family)
    except OSError as exc:  # create_server's text adds the address again: errno's own
        if isinstance(exc, socket.gaierror) or not exc.errno:
            reason = exc.strerror or str(exc)  # a host name that does not resolve
        else:
            reason = os.strerror(exc.errno)
        raise OSError(f"cannot listen on {host}:{port} (HTTP): {reason}") from None


class HttpServer:
    """The HTTP/JSON port: bound by :meth:`bind`, served by :meth:`start`, closed by
    :meth:`stop` (in-flight requests get ``grace_seconds``)."""

    def __init__(self, api: HttpApi, host: str, port: int,
                 ssl_context: ssl.SSLContext | None, grace_seconds: float) -> None:
        self.api = api
        self.host = host
        self.requested_port = port
        self.ssl_context = ssl_context
        self.grace_seconds = grace_seconds
        self.port = 0
        self._socket: socket.socket | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        address = listen_host(self.host)
        shown = f"[{address}]" if ":" in address else address or "[::]"
        return f"{scheme}://{shown}:{self.port}"

    def bind(self) -> int:
        self._socket = listen_socket(self.host, self.requested_port)
        self.port = int(self._socket.getsockname()[1])
        return self.port

    async def start(self) -> None:
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        self._runner = web.AppRunner(
            self.api.application(), access_log=None, handler_cancellation=True,
            shutdown_timeout=self.grace_seconds, max_line_size=MAX_REQUEST_LINE)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket, ssl_context=self.ssl_context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
