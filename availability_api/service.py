"""``availability.v1.AvailabilityService`` over the replica store (asyncio servicer).

Request rules, checked before any lookup:

* empty ids, ids containing ``|``, no SKUs or more than 1,000: INVALID_ARGUMENT;
* a channel the replica has never received a snapshot for: NOT_FOUND;
* a per-location channel (click-and-collect, keys ``channel|sku|location_id``) needs
  ``location_id`` and answers for that one location; a pooled channel refuses it.
  Asking for one location keeps every answer a single number with a single version;
  the stock of every location of a SKU is what ListPositions is for.

An unknown SKU of a known channel is ``found=false`` with ats 0. Responses are built by
concatenating stored frames (see :mod:`frames`) and setting ``replica_lag``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import NoReturn

import grpc

from availability_api import frames
from availability_api.feed import ChangeFeed, FeedClosed
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.generated.availability.v1 import availability_pb2_grpc as pb_grpc
from availability_api.replica import Replica
from availability_api.store import ReplicaStore
from availability_api.validation import (
    MAX_LOCATION_IDS,
    MAX_SKUS,
    InvalidRequest,
    check_id,
    check_ids,
    check_location,
    quoted,
)
from availability_contracts.errors import AvailabilityError
from availability_contracts.keys import channel_key

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AvailabilityService"].full_name


class UnknownChannel(AvailabilityError, LookupError):
    """A channel no snapshot has named yet (NOT_FOUND)."""

    code = "unknown_channel"


class AvailabilityServicer(pb_grpc.AvailabilityServiceServicer):
    """Answers from the store; the replica supplies channel kinds and lag."""

    def __init__(self, store: ReplicaStore, replica: Replica, feed: ChangeFeed) -> None:
        self._store = store
        self._replica = replica
        self._feed = feed

    def _channel_keys(self, channel: str, skus: Sequence[str], location_id: str) -> list[str]:
        """Store keys of ``skus`` on ``channel``, after every request check."""
        check_id("channel", channel)
        check_ids("skus", skus, MAX_SKUS, required=True)
        kinds = self._replica.channel_kinds
        if channel not in kinds:
            known = ", ".join(sorted(kinds)) or "none yet"
            raise UnknownChannel(
                f"channel {quoted(channel)} is unknown to this replica (channels: {known})")
        check_location(location_id, kinds[channel], channel)
        return [channel_key(channel, sku, location_id) for sku in skus]

    @staticmethod
    async def _refuse(context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
        """End the call with the status of ``error`` (abort raises; so does this)."""
        code = (grpc.StatusCode.NOT_FOUND if isinstance(error, UnknownChannel)
                else grpc.StatusCode.INVALID_ARGUMENT)
        await context.abort(code, str(error))
        raise error

    def _frames(self, keys: Sequence[str], skus: Sequence[str], channel: str,
                location_id: str) -> list[bytes]:
        found = self._store.channel_frames(keys)
        return [frame if frame is not None
                else frames.missing_channel_frame(channel, sku, location_id)
                for frame, sku in zip(found, skus, strict=True)]

    async def GetAvailability(self, request: pb.GetAvailabilityRequest,
                              context: grpc.aio.ServicerContext
                              ) -> pb.GetAvailabilityResponse:
        try:
            check_id("sku", request.sku)
            (key,) = self._channel_keys(request.channel, (request.sku,), request.location_id)
        except (InvalidRequest, UnknownChannel) as error:
            await self._refuse(context, error)
        frame = self._store.channel_frame(key)
        if frame is None:
            frame = frames.missing_channel_frame(request.channel, request.sku,
                                                 request.location_id)
        response = pb.GetAvailabilityResponse.FromString(frame)
        response.replica_lag = self._replica.lag
        return response

    async def BatchGetAvailability(self, request: pb.BatchGetAvailabilityRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.BatchGetAvailabilityResponse:
        skus = list(request.skus)
        try:
            keys = self._channel_keys(request.channel, skus, request.location_id)
        except (InvalidRequest, UnknownChannel) as error:
            await self._refuse(context, error)
        parts = self._frames(keys, skus, request.channel, request.location_id)
        response = pb.BatchGetAvailabilityResponse.FromString(b"".join(parts))
        response.replica_lag = self._replica.lag
        return response

    async def ListPositions(self, request: pb.ListPositionsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListPositionsResponse:
        location_ids = list(request.location_ids)
        try:
            check_id("sku", request.sku)
            check_ids("location_ids", location_ids, MAX_LOCATION_IDS, required=False)
        except InvalidRequest as error:
            await self._refuse(context, error)
        parts = self._store.position_frames(request.sku, location_ids)
        response = pb.ListPositionsResponse.FromString(b"".join(parts))
        response.replica_lag = self._replica.lag
        return response

    async def WatchAvailability(self, request: pb.WatchAvailabilityRequest,
                                context: grpc.aio.ServicerContext
                                ) -> AsyncIterator[pb.WatchAvailabilityResponse]:
        skus = list(dict.fromkeys(request.skus))  # a SKU asked twice is watched once
        try:
            keys = self._channel_keys(request.channel, list(request.skus),
                                      request.location_id)
            subscription = self._feed.subscribe(keys)  # before reading: no change missed
        except (InvalidRequest, UnknownChannel) as error:
            await self._refuse(context, error)
            return
        except FeedClosed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica is shutting down")
            return
        try:
            keys = list(dict.fromkeys(keys))
            sent: dict[str, tuple[bool, int]] = {}
            for key, frame in zip(keys, self._frames(keys, skus, request.channel,
                                                     request.location_id), strict=True):
                response = pb.WatchAvailabilityResponse.FromString(frame)
                response.replica_lag = self._replica.lag
                response.initial = True
                value = response.availability
                sent[key] = (value.found, value.version)
                yield response
            while True:
                for key, frame in await subscription.changes():
                    response = pb.WatchAvailabilityResponse.FromString(frame)
                    value = response.availability
                    found, version = sent.get(key, (False, 0))
                    if value.found and found and value.version <= version:
                        continue  # already sent with the current values
                    if not value.found and not found:
                        continue
                    sent[key] = (value.found, value.version)
                    response.replica_lag = self._replica.lag
                    yield response
        except FeedClosed:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "replica is shutting down; reconnect to another replica")
        finally:
            self._feed.unsubscribe(subscription)
