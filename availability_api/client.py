"""``AvailabilityClient``: the typed, synchronous client of AvailabilityService.

* every call has a deadline (``timeout``, default 2 s; per-call override) so a stuck
  server never hangs a web request; Watch has none unless asked;
* ``batch_get`` takes any number of SKUs and sends them as concurrent calls of at most
  1,000, then returns the results in request order;
* failures raise :class:`ApiError` carrying the gRPC status code and the server's text.

Results are the generated protobuf messages (typed through the ``.pyi`` stubs), so
no per-value conversion slows the batch path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from availability_api.credentials import channel_credentials
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.generated.availability.v1 import availability_pb2_grpc as pb_grpc
from availability_api.validation import MAX_SKUS
from availability_contracts.errors import AvailabilityError

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 2.0
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


class ApiError(AvailabilityError):
    """A call the server refused or that failed: ``code`` (here the gRPC status, the
    machine-readable part) and the server's ``details``."""

    code: grpc.StatusCode

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> ApiError:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        return cls(code, details or "")


@dataclass(frozen=True)
class BatchAnswer:
    """One value per requested SKU, in request order; lag is the worst of the calls."""

    results: list[pb.ChannelAvailability]
    replica_lag: int


class Watch:
    """An open WatchAvailability stream: iterate for values, ``cancel()`` to end it."""

    def __init__(self, call: grpc.Call) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> Iterator[pb.WatchAvailabilityResponse]:
        try:
            yield from self._call
        except grpc.RpcError as error:
            if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:
                return
            raise ApiError.from_rpc(error) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class AvailabilityClient:
    """Reads availability from one replica (or a balancer in front of several)."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float | None = DEFAULT_TIMEOUT,
                 tls: bool = False, tls_ca: Path | None = None, tls_cert: Path | None = None,
                 tls_key: Path | None = None) -> None:
        """TLS is on when ``tls`` is true or any TLS file is given (cert+key: mutual TLS)."""
        self.target = target
        self.timeout = timeout
        if tls or tls_ca or tls_cert or tls_key:
            credentials = channel_credentials(tls_ca, tls_cert, tls_key)
            self._channel = grpc.secure_channel(target, credentials, _CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, _CHANNEL_OPTIONS)
        self._stub = pb_grpc.AvailabilityServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def get(self, channel: str, sku: str, location_id: str = "", *,
            timeout: float | None = None) -> pb.GetAvailabilityResponse:
        """One SKU; ``location_id`` only for a per-location channel."""
        request = pb.GetAvailabilityRequest(channel=channel, sku=sku, location_id=location_id)
        try:
            return self._stub.GetAvailability(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise ApiError.from_rpc(error) from None

    def batch_get(self, channel: str, skus: Sequence[str], location_id: str = "", *,
                  timeout: float | None = None) -> BatchAnswer:
        """Any number of SKUs, sent as concurrent calls of at most 1,000 (none: no call)."""
        chunks = [skus[i:i + MAX_SKUS] for i in range(0, len(skus), MAX_SKUS)]
        deadline = self._deadline(timeout)
        calls = [
            self._stub.BatchGetAvailability.future(
                pb.BatchGetAvailabilityRequest(channel=channel, skus=chunk,
                                               location_id=location_id),
                timeout=deadline)
            for chunk in chunks
        ]
        results: list[pb.ChannelAvailability] = []
        lag = 0
        try:
            for call in calls:
                response = call.result()
                results.extend(response.results)
                lag = max(lag, response.replica_lag)
        except grpc.RpcError as error:
            for call in calls:
                call.cancel()
            raise ApiError.from_rpc(error) from None
        return BatchAnswer(results, lag)

    def list_positions(self, sku: str, location_ids: Sequence[str] = (), *,
                       timeout: float | None = None) -> pb.ListPositionsResponse:
        """The SKU's positions: all locations, or the given ones (unknown ones left out)."""
        request = pb.ListPositionsRequest(sku=sku, location_ids=location_ids)
        try:
            return self._stub.ListPositions(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise ApiError.from_rpc(error) from None

    def watch(self, channel: str, skus: Sequence[str], location_id: str = "", *,
              timeout: float | None = None) -> Watch:
        """Current values, then changes; no deadline unless ``timeout`` is given."""
        request = pb.WatchAvailabilityRequest(channel=channel, skus=skus,
                                              location_id=location_id)
        return Watch(self._stub.WatchAvailability(request, timeout=timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The replica's grpc.health.v1 status name: SERVING once caught up."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            status = self._health.Check(request, timeout=self._deadline(timeout)).status
            return health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        except grpc.RpcError as error:
            raise ApiError.from_rpc(error) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AvailabilityClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
