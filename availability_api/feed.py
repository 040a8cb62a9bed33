"""Fans applied channel values out to watch streams (gRPC WatchAvailability, HTTP SSE).

The replica thread publishes each applied batch; delivery happens inside the server's
event loop. A subscription holds only the latest undelivered value per key, so a slow
client costs bounded memory and, once it reads again, sees the newest numbers rather
than every intermediate one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from availability_contracts.errors import AvailabilityError


class FeedClosed(AvailabilityError):
    """The server is shutting down; the stream should end."""

    code = "feed_closed"


class Subscription:
    """The pending changes of one Watch stream, keyed by channel key."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = frozenset(keys)
        self._latest: dict[str, bytes] = {}
        self._ready = asyncio.Event()
        self._closed = False

    def offer(self, key: str, frame: bytes) -> None:
        self._latest[key] = frame
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def changes(self, timeout: float | None = None) -> list[tuple[str, bytes]]:
        """Wait for and take every pending change; FeedClosed once the feed closes.

        With ``timeout``, an empty list after that many seconds without a change.
        """
        if timeout is None:
            await self._ready.wait()
        else:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return []
        if self._closed:
            raise FeedClosed
        self._ready.clear()
        pending = list(self._latest.items())
        self._latest.clear()
        return pending


class ChangeFeed:
    """Subscriptions by key; :meth:`publish` may be called from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._by_key: dict[str, set[Subscription]] = {}
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    @property
    def subscriptions(self) -> int:
        return len(self._subscriptions)

    def publish(self, changes: list[tuple[str, bytes]]) -> None:
        """Hand a batch of (channel key, frame) to the event loop; no-op once closed."""
        if self._closed or self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed since the check
            self._loop.call_soon_threadsafe(self._dispatch, changes)

    def _dispatch(self, changes: list[tuple[str, bytes]]) -> None:
        if not self._by_key:
            return
        for key, frame in changes:
            for subscription in self._by_key.get(key, ()):
                subscription.offer(key, frame)

    def subscribe(self, keys: Iterable[str]) -> Subscription:
        if self._closed:
            raise FeedClosed
        subscription = Subscription(keys)
        self._subscriptions.add(subscription)
        for key in subscription.keys:
            self._by_key.setdefault(key, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        for key in subscription.keys:
            holders = self._by_key.get(key)
            if holders is not None:
                holders.discard(subscription)
                if not holders:
                    del self._by_key[key]

    def close(self) -> None:
        """End every stream (they answer UNAVAILABLE) and refuse new subscriptions."""
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close()
