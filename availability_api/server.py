"""The API process: replica + asyncio gRPC server, with health, reflection and TLS, and
the HTTP/JSON port (:mod:`http_api`) on the same loop.

Lifecycle, as a load balancer sees it through ``grpc.health.v1`` (or HTTP ``/readyz``):

1. start: the ports are open, health NOT_SERVING (``/readyz`` 503) while the replica
   catches up with the topic ends it found at startup (reads would be stale);
2. caught up: SERVING, for the overall server ("") and for AvailabilityService;
   ``/readyz`` 200;
3. stop (SIGTERM/SIGINT in ``availability api``): NOT_SERVING (``/readyz`` 503) for
   ``drain_seconds`` while calls and requests are still answered, so balancers move
   traffic away; then Watch streams end with UNAVAILABLE and HTTP streams with a
   ``shutdown`` event, in-flight calls and requests get ``grace_seconds`` to finish,
   the replica stops after its current batch and the store is closed.

The servers are asyncio (``grpc.aio``, aiohttp): a watch is a suspended coroutine, not
a parked thread, so many watchers cost little. Store reads are microseconds and run on
the event loop; the replica writes from its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from availability_api import metrics, reflection
from availability_api.credentials import server_credentials, server_ssl_context
from availability_api.feed import ChangeFeed
from availability_api.http_api import HttpApi, HttpServer
from availability_api.lookups import Lookups
from availability_api.replica import Replica
from availability_api.service import SERVICE_NAME, AvailabilityServicer, add_to_server
from availability_api.settings import ApiSettings
from availability_api.store import ReplicaStore, StoreError
from availability_contracts.codec import Codec

log = logging.getLogger("availability.api")

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.so_reuseport", 0),  # a second replica on a taken port must fail, not share it
    ("grpc.keepalive_time_ms", 60_000),  # notice dead Watch clients
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]
HEALTH_SERVICES = ("", SERVICE_NAME)


class ApiServer:
    """One replica and the gRPC (and HTTP/JSON) server answering from it."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.port = 0
        self.http_port = 0
        """The bound HTTP/JSON port; 0 while it is off."""
        self.serving = False
        """What health says: True once caught up, False again from the shutdown on."""
        self.http: HttpServer | None = None
        self.store: ReplicaStore | None = None
        self.replica: Replica | None = None
        self.feed: ChangeFeed | None = None
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._replica_stopped = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> int:
        """Open the store, start serving (NOT_SERVING) and the replica; the bound port."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        self.store = ReplicaStore(settings.data_dir, settings.topics.positions,
                                  settings.topics.channels,
                                  channels_in_memory=settings.channels_in_memory)
        held = self.store.channels_in_memory
        if held is not None:
            log.info("%s channel answers in memory (%.1f MB of keys and frames), read in "
                     "%.1f s", f"{held[0]:,}", held[1] / 1e6, self.store.channels_load_seconds)
        try:
            self.feed = ChangeFeed(loop)
            self.replica = Replica(self.store, settings.brokers, settings.topics,
                                   Codec(settings.schema_registry))
            self.replica.on_change = self.feed.publish
            self.replica.on_caught_up = lambda: self._from_thread(loop, self._mark_serving)
            self.replica.on_stopped = lambda failure: self._from_thread(
                loop, self._replica_stopped.set)
            lookups = Lookups(self.store, self.replica, self.feed)
            self._server = grpc.aio.server(options=SERVER_OPTIONS)
            add_to_server(AvailabilityServicer(lookups), self._server)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
            for service in HEALTH_SERVICES:
                await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            reflection.enable(self._server, (SERVICE_NAME, health.SERVICE_NAME))
            if settings.http_port is not None:  # bound first: a taken port fails early
                self.http = HttpServer(
                    HttpApi(lookups, lambda: self.serving,
                            keepalive_seconds=settings.sse_keepalive_seconds),
                    settings.http_address, settings.http_port,
                    server_ssl_context(settings.tls) if settings.tls else None,
                    settings.grace_seconds)
                self.http_port = self.http.bind()
            self.port = self._bind(self._server)
            await self._server.start()
            if self.http is not None:
                await self.http.start()
        except BaseException:
            if self._server is not None:
                await self._server.stop(0)
            if self.http is not None:
                await self.http.stop()
            self.store.close()
            raise
        scheme = "mutual TLS" if settings.tls and settings.tls.mutual else (
            "TLS" if settings.tls else "plaintext")
        log.info("listening on %s:%d (%s), NOT_SERVING until caught up with %s and %s",
                 settings.host, self.port, scheme, settings.topics.positions,
                 settings.topics.channels)
        if self.http is not None:
            log.info("HTTP/JSON on %s (%s), /readyz 503 until caught up", self.http.url,
                     scheme)
        self.replica.start()
        replica = self.replica
        metrics.serve(settings.metrics_port, lambda: replica.lag, settings.metrics_host)
        return self.port

    def _bind(self, server: grpc.aio.Server) -> int:
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            if self.settings.tls is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, server_credentials(self.settings.tls))
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        if not port:
            raise OSError(f"cannot listen on {address} (port in use?)")
        return port

    @staticmethod
    def _from_thread(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the server's loop; dropped once the loop is closed."""
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nobody to tell
                loop.call_soon_threadsafe(callback)

    def _mark_serving(self) -> None:
        task = asyncio.ensure_future(self._set_health(health_pb2.HealthCheckResponse.SERVING))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _set_health(self, status: int) -> None:
        if self._stopping:
            return  # shutdown keeps NOT_SERVING
        for service in HEALTH_SERVICES:
            await self.health.set(service, status)
        self.serving = status == health_pb2.HealthCheckResponse.SERVING
        log.info("health: %s", health_pb2.HealthCheckResponse.ServingStatus.Name(status))

    async def serve(self, stop: asyncio.Event) -> int:
        """Start, run until ``stop`` is set or the replica fails, then drain; exit code.

        A replica stopped by its data dir (disk full, volume gone read-only) re-raises
        that :class:`StoreError` after the shutdown, for the CLI to print as one line.
        """
        await self.start()
        stop_wait = asyncio.ensure_future(stop.wait())
        failed_wait = asyncio.ensure_future(self._replica_stopped.wait())
        await asyncio.wait({stop_wait, failed_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        failed_wait.cancel()
        failure = self.replica.failure if self.replica else None
        await self.stop(drain=failure is None)
        if isinstance(failure, StoreError):
            raise failure
        return 1 if failure is not None else 0

    async def stop(self, drain: bool = True) -> None:
        """NOT_SERVING, drain, end streams, stop the servers, the replica and the store."""
        self._stopping = True
        self.serving = False
        await self.health.enter_graceful_shutdown()
        log.info("health: NOT_SERVING, draining for %.1fs", self.settings.drain_seconds)
        if drain and self.settings.drain_seconds > 0:
            await asyncio.sleep(self.settings.drain_seconds)
        if self.feed is not None:
            self.feed.close()
        servers = []  # both get the same grace period, at the same time
        if self._server is not None:
            servers.append(self._server.stop(self.settings.grace_seconds))
        if self.http is not None:
            servers.append(self.http.stop())
        await asyncio.gather(*servers)
        if self.replica is not None:
            await asyncio.to_thread(self.replica.stop)
        if self.store is not None:
            if self.replica is None or self.replica.stopped.is_set():
                try:
                    self.store.close()
                except StoreError as exc:  # after a failed write: nothing left to save
                    log.error("%s", exc)
            else:  # stuck on an unreachable broker: leave the store to process exit
                log.warning("replica did not stop in time; store left open")
            self.store = None
        log.info("stopped")
