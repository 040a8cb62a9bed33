"""``availability.v1.AvailabilityService`` (asyncio servicer) over :class:`Lookups`.

The request rules and the lookups themselves are in :mod:`lookups`, shared with the
HTTP/JSON front end; this module maps them to gRPC: :class:`InvalidRequest` is
INVALID_ARGUMENT, :class:`UnknownChannel` NOT_FOUND, and a Watch that the shutdown ends
UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import NoReturn

import grpc

from availability_api.feed import FeedClosed
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.generated.availability.v1 import availability_pb2_grpc as pb_grpc
from availability_api.lookups import Lookups, UnknownChannel, Watch
from availability_api.validation import InvalidRequest

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AvailabilityService"].full_name

__all__ = ["SERVICE_NAME", "AvailabilityServicer", "UnknownChannel"]


class AvailabilityServicer(pb_grpc.AvailabilityServiceServicer):
    """Each RPC is one call of :class:`Lookups`."""

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
                              context: grpc.aio.ServicerContext
                              ) -> pb.GetAvailabilityResponse:
        try:
            return self._lookups.get(request.channel, request.sku, request.location_id)
        except (InvalidRequest, UnknownChannel) as error:
            await self._refuse(context, error)

    async def BatchGetAvailability(self, request: pb.BatchGetAvailabilityRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.BatchGetAvailabilityResponse:
        try:
            return self._lookups.batch_get(request.channel, list(request.skus),
                                           request.location_id)
        except (InvalidRequest, UnknownChannel) as error:
            await self._refuse(context, error)

    async def ListPositions(self, request: pb.ListPositionsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListPositionsResponse:
        try:
            return self._lookups.list_positions(request.sku, list(request.location_ids))
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
