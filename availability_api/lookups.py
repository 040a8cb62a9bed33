"""The reads of the API, one implementation for both front ends: gRPC (:mod:`service`)
and HTTP/JSON (:mod:`http_api`).

Request rules, checked before any lookup:

* empty ids, ids containing ``|``, no SKUs or more than 1,000: :class:`InvalidRequest`
  (gRPC INVALID_ARGUMENT, HTTP 400);
* a channel the replica has never received a snapshot for: :class:`UnknownChannel`
  (NOT_FOUND, 404);
* a per-location channel (click-and-collect, keys ``channel|sku|location_id``) needs
  ``location_id`` and answers for that one location; a pooled channel refuses it.
  Asking for one location keeps every answer a single number with a single version;
  the stock of every location of a SKU is what ListPositions is for.

An unknown SKU of a known channel is ``found=false`` with ats 0. An answer is built by
concatenating stored frames (see :mod:`frames`) and ``replica_lag``: gRPC sends those
bytes as they are (the ``*_wire`` methods), the HTTP side parses them into the
protobuf response message and renders it as JSON.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from availability_api import frames
from availability_api.feed import ChangeFeed, Subscription
from availability_api.generated.availability.v1 import availability_pb2 as pb
from availability_api.replica import Replica
from availability_api.store import ReplicaStore
from availability_api.validation import (
    MAX_LOCATION_IDS,
    MAX_SKUS,
    check_id,
    check_ids,
    check_location,
    quoted,
)
from availability_contracts.errors import AvailabilityError
from availability_contracts.keys import channel_key


class UnknownChannel(AvailabilityError, LookupError):
    """A channel no snapshot has named yet (NOT_FOUND)."""

    code = "unknown_channel"


class Lookups:
    """Answers from the store; the replica supplies channel kinds and lag, the feed the
    changes of a watch."""

    def __init__(self, store: ReplicaStore, replica: Replica, feed: ChangeFeed) -> None:
        self._store = store
        self._replica = replica
        self._feed = feed

    @property
    def lag(self) -> int:
        return self._replica.lag

    def channel_keys(self, channel: str, skus: Sequence[str], location_id: str) -> list[str]:
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

    def _frames(self, keys: Sequence[str], skus: Sequence[str], channel: str,
                location_id: str) -> list[bytes]:
        found = self._store.channel_frames(keys)
        return [frame if frame is not None
                else frames.missing_channel_frame(channel, sku, location_id)
                for frame, sku in zip(found, skus, strict=True)]

    def get(self, channel: str, sku: str, location_id: str = "") -> pb.GetAvailabilityResponse:
        """One SKU on one channel."""
        return pb.GetAvailabilityResponse.FromString(self.get_wire(channel, sku, location_id))

    def get_wire(self, channel: str, sku: str, location_id: str = "") -> bytes:
        """:meth:`get` as GetAvailabilityResponse wire bytes (what gRPC sends)."""
        check_id("sku", sku)
        (key,) = self.channel_keys(channel, (sku,), location_id)
        frame = self._store.channel_frame(key)
        if frame is None:
            frame = frames.missing_channel_frame(channel, sku, location_id)
        return frames.with_replica_lag(frame, self._replica.lag)

    def batch_get(self, channel: str, skus: Sequence[str], location_id: str = ""
                  ) -> pb.BatchGetAvailabilityResponse:
        """Up to 1,000 SKUs of one channel, one result per SKU in request order."""
        return pb.BatchGetAvailabilityResponse.FromString(
            self.batch_get_wire(channel, skus, location_id))

    def batch_get_wire(self, channel: str, skus: Sequence[str], location_id: str = ""
                       ) -> bytes:
        """:meth:`batch_get` as BatchGetAvailabilityResponse wire bytes."""
        keys = self.channel_keys(channel, skus, location_id)
        parts = self._frames(keys, skus, channel, location_id)
        return frames.with_replica_lag(b"".join(parts), self._replica.lag)

    def list_positions(self, sku: str, location_ids: Sequence[str] = ()
                       ) -> pb.ListPositionsResponse:
        """The SKU's positions: every location held, or the given ones in order."""
        return pb.ListPositionsResponse.FromString(self.list_positions_wire(sku, location_ids))

    def list_positions_wire(self, sku: str, location_ids: Sequence[str] = ()) -> bytes:
        """:meth:`list_positions` as ListPositionsResponse wire bytes."""
        check_id("sku", sku)
        check_ids("location_ids", location_ids, MAX_LOCATION_IDS, required=False)
        parts = self._store.position_frames(sku, location_ids)
        return frames.with_replica_lag(b"".join(parts), self._replica.lag)

    def watch(self, channel: str, skus: Sequence[str], location_id: str = "",
              *, idle_timeout: float | None = None) -> Watch:
        """A checked, subscribed watch (InvalidRequest, UnknownChannel, or FeedClosed
        while the replica shuts down); read its :meth:`Watch.responses`, then close it."""
        keys = self.channel_keys(channel, skus, location_id)
        subscription = self._feed.subscribe(keys)  # before reading: no change missed
        return Watch(self, subscription, keys, skus, channel, location_id, idle_timeout)


class Watch:
    """Current value of every requested SKU first (``initial``), then each change.

    :meth:`responses` yields WatchAvailabilityResponse messages; with ``idle_timeout`` it also
    yields ``None`` after that many seconds without a change (for keep-alives). It
    raises :class:`FeedClosed` when the replica shuts down. A SKU asked twice is watched
    once; a change whose value was already sent (same or older version) is skipped.
    """

    def __init__(self, lookups: Lookups, subscription: Subscription, keys: Sequence[str],
                 skus: Sequence[str], channel: str, location_id: str,
                 idle_timeout: float | None) -> None:
        self._lookups = lookups
        self._subscription = subscription
        unique = dict(zip(keys, skus, strict=True))
        self._keys = list(unique)
        self._skus = list(unique.values())
        self._channel = channel
        self._location_id = location_id
        self._idle_timeout = idle_timeout

    def close(self) -> None:
        self._lookups._feed.unsubscribe(self._subscription)

    async def responses(self) -> AsyncGenerator[pb.WatchAvailabilityResponse | None, None]:
        """The values, then the changes (see the class); run it inside ``aclosing``."""
        lookups = self._lookups
        sent: dict[str, tuple[bool, int]] = {}
        current = lookups._frames(self._keys, self._skus, self._channel, self._location_id)
        for key, frame in zip(self._keys, current, strict=True):
            response = pb.WatchAvailabilityResponse.FromString(frame)
            response.replica_lag = lookups.lag
            response.initial = True
            value = response.availability
            sent[key] = (value.found, value.version)
            yield response
        while True:
            changes = await self._subscription.changes(self._idle_timeout)
            if not changes:
                yield None  # idle for idle_timeout seconds
                continue
            for key, frame in changes:
                response = pb.WatchAvailabilityResponse.FromString(frame)
                value = response.availability
                found, version = sent.get(key, (False, 0))
                if value.found and found and value.version <= version:
                    continue  # already sent with the current values
                if not value.found and not found:
                    continue
                sent[key] = (value.found, value.version)
                response.replica_lag = lookups.lag
                yield response
