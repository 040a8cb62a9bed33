"""``availability.v1.AvailabilityService`` (asyncio servicer) over :class:`Lookups`.

The request rules and the lookups themselves are in :mod:`lookups`, shared with the
HTTP/JSON front end; this module maps them to gRPC: :class:`InvalidRequest` is
INVALID_ARGUMENT, :class:`UnknownChannel` NOT_FOUND, and a Watch that the shutdown ends
UNAVAILABLE. The unary answers are already wire bytes (stored frames), so
:func:`add_to_server` registers them without a response serializer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import NoReturn

import grpc

from availability_api.decoding import decoding_stream, decoding_unary
from availability_api.feed import FeedClosed
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.generated.availability.v1 import availability_pb2_grpc as pb_grpc
from availability_api.lookups import Lookups, UnknownChannel, Watch
from availability_api.metrics import timed_stream, timed_unary
from availability_api.validation import InvalidRequest

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AvailabilityService"].full_name

__all__ = ["SERVICE_NAME", "AvailabilityServicer", "UnknownChannel", "add_to_server"]


class AvailabilityServicer(pb_grpc.AvailabilityServiceServicer):
    """Each RPC is one call of :class:`Lookups`; unary ones return wire bytes."""

    def __init__(self, lookups: Lookups) -> None:
        self._lookups = lookups

    @staticmethod
    async def _refuse(context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
        """End the call with the status of ``error`` (abort raises; so does this)."""
        code = (grpc.StatusCode.NOT_FOUND if isinstance(error, UnknownChannel)
                else grpc.StatusCode.INVALID_ARGUMENT)
        await context.abort(code, str(error))
        raise error

    async def GetAvailability(self, request: pb.GetAvailabilityRequest,
                              context: grpc.aio.ServicerContext) -> bytes:
        try:
            return self._lookups.get_wire(request.channel, request.sku, request.location_id)
        except (InvalidRequest, UnknownChannel) as error:
            await self._refuse(context, error)

    async def BatchGetAvailability(self, request: pb.BatchGetAvailabilityRequest,
                                   context: grpc.aio.ServicerContext) -> bytes:
        try:
            return self._lookups.batch_get_wire(request.channel, list(request.skus),
                                                request.location_id)
        except (InvalidRequest, UnknownChannel) as error:
            await self._refuse(context, error)

    async def ListPositions(self, request: pb.ListPositionsRequest,
                            context: grpc.aio.ServicerContext) -> bytes:
        try:
            return self._lookups.list_positions_wire(request.sku, list(request.location_ids))
        except InvalidRequest as error:
            await self._refuse(context, error)

    async def WatchAvailability(self, request: pb.WatchAvailabilityRequest,
                                context: grpc.aio.ServicerContext
                                ) -> AsyncIterator[pb.WatchAvailabilityResponse]:
        watch: Watch
        try:
            watch = self._lookups.watch(request.channel, list(request.skus),
                                        request.location_id)
        except (InvalidRequest, UnknownChannel) as error:
            await self._refuse(context, error)
        except FeedClosed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica is shutting down")
            return
        try:
            async with aclosing(watch.responses()) as responses:
                async for response in responses:
                    if response is not None:
                        yield response
        except FeedClosed:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "replica is shutting down; reconnect to another replica")
        finally:
            watch.close()


def add_to_server(servicer: pb_grpc.AvailabilityServiceServicer, server: grpc.aio.Server,
                  *, observed: bool = True) -> None:
    """The generated ``add_AvailabilityServiceServicer_to_server``, except that the unary
    methods send the servicer's bytes as they are (no response serializer: a unary
    method of the servicer returns wire bytes).

    ``observed`` (the replica) wraps each handler once, here, in the request metrics
    (outermost: undecodable requests are counted too) and in request decoding that
    answers INVALID_ARGUMENT; server interceptors would do the same at a cost on every
    call. Without it (the benchmark's floor), grpc parses the requests itself."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in pb.DESCRIPTOR.services_by_name["AvailabilityService"].methods:
        name = method.name
        parse: Callable[[bytes], object] = getattr(pb, method.input_type.name).FromString
        inner = getattr(servicer, name)
        streams = method.server_streaming
        if observed:
            inner = (timed_stream(name, decoding_stream(name, parse, inner)) if streams
                     else timed_unary(name, decoding_unary(name, parse, inner)))
        deserializer = None if observed else parse
        if streams:
            handlers[name] = grpc.unary_stream_rpc_method_handler(
                inner, request_deserializer=deserializer,
                response_serializer=getattr(pb, method.output_type.name).SerializeToString)
        else:
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                inner, request_deserializer=deserializer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
