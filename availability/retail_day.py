"""A deterministic retail workload: what ERP, WMS, POS and the web shop would send.

Why a generator and not a recorded file: the benchmarks need millions of events with a
known shape (Zipf-popular SKUs over DCs and stores), the tests need small ones, and
both need the same events for the same seed so that an engine run can be checked
against an in-process fold of exactly those events.

The base mix: DC receipts, store sales, adjustments, returns (some damaged), DC->store
transfers shipped then received (some short), reservation lifecycles (created, then
fulfilled or released; with ``expiring_share`` some carry an ``expires_at`` and a part
of those are abandoned and expire), cycle COUNTs near the shelf's real quantity, a
share of duplicates (same event re-sent) and of late events (held back for minutes of
event time, then sent with their original ``occurred_at``).

``flash_sale=True`` is the demand side of a sale rush: store sales and web
reservations, mostly fulfilled; with ``hot_skus`` it concentrates on the most popular
SKUs. :func:`flash_sale_mix` interleaves it with the base mix at 10x the base rate.

Expiry depends on the engine wall clock, so correctness comparisons use the default
``expiring_share=0`` (no ``expires_at``): the fold then does not depend on when it runs.
"""

from __future__ import annotations

import heapq
import itertools
import random
from bisect import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from availability_domain.events import EventType, InventoryEvent

MINUTE_MS = 60_000


@dataclass(frozen=True)
class Workload:
    skus: int = 2_000
    dcs: int = 3
    stores: int = 20
    seed: int = 7
    start_ms: int = 1_795_000_000_000
    step_ms: int = 50
    """Event-time gap between consecutive events is uniform in 0..step_ms."""
    duplicate_share: float = 0.01
    late_share: float = 0.005
    """Share of events held back 1-30 minutes of event time, then sent late."""
    zipf_s: float = 1.1
    """Zipf exponent of SKU popularity (rank r has weight 1 / r**s)."""
    flash_sale: bool = False
    """Demand only (store sales and web reservations, mostly fulfilled): a sale rush."""
    hot_skus: int = 0
    """With ``flash_sale``: the rush hits only the ``hot_skus`` most popular SKUs."""
    expiring_share: float = 0.0
    """Share of reservations created with an ``expires_at`` (0: no expiry at all)."""
    ttl_ms: tuple[int, int] = (10 * MINUTE_MS, 30 * MINUTE_MS)
    """expires_at - occurred_at of an expiring reservation, uniform in this range."""
    abandon_share: float = 0.3
    """Share of expiring reservations never fulfilled nor released: they expire."""
    source: str = "bench"

    @property
    def locations(self) -> list[str]:
        """DC1..DCn then S001..Smmm: the ids the rules file must declare."""
        return [f"DC{i + 1}" for i in range(self.dcs)] + [
            f"S{i + 1:03d}" for i in range(self.stores)
        ]

    @property
    def sku_ids(self) -> list[str]:
        """SKU ids by popularity rank (the first is the most popular)."""
        return [f"SKU-{i:06d}" for i in range(self.skus)]

    def events(self, count: int) -> Iterator[InventoryEvent]:
        """``count`` events (duplicates and late ones included), in arrival order."""
        rng = random.Random(self.seed)
        skus = self.sku_ids
        cumulative = list(itertools.accumulate(
            1 / (rank + 1) ** self.zipf_s for rank in range(self.skus)))
        if self.flash_sale and 0 < self.hot_skus < self.skus:
            skus, cumulative = skus[: self.hot_skus], cumulative[: self.hot_skus]
        total = cumulative[-1]
        dcs = self.locations[: self.dcs]
        stores = self.locations[self.dcs :]
        store_cumulative = list(itertools.accumulate(
            1 / (rank + 1) ** 0.5 for rank in range(len(stores))))  # big stores sell more
        store_total = store_cumulative[-1]
        pickup = stores[: max(1, len(stores) // 4)]
        clock = self.start_ms
        shelf: dict[tuple[str, str], int] = {}
        open_reservations: list[InventoryEvent] = []
        in_flight: list[InventoryEvent] = []
        recent: list[InventoryEvent] = []
        held: list[tuple[int, int, InventoryEvent]] = []
        serial = 0
        emitted = 0
        E = EventType
        tag = f"{self.seed}"
        random_ = rng.random
        randint = rng.randint

        def make(kind: EventType, sku: str, location: str, quantity: int,
                 **extra: object) -> InventoryEvent:
            nonlocal serial
            serial += 1
            return InventoryEvent(f"ev-{tag}-{serial}", kind, clock, self.source, sku,
                                  location, quantity, **extra)  # type: ignore[arg-type]

        def store() -> str:
            return stores[bisect(store_cumulative, random_() * store_total)]

        def adjust(sku: str, location: str, delta: int) -> None:
            key = (sku, location)
            shelf[key] = shelf.get(key, 20) + delta

        while emitted < count:
            clock += randint(0, self.step_ms)
            if held and held[0][0] <= clock:
                yield heapq.heappop(held)[2]
                emitted += 1
                continue
            if recent and random_() < self.duplicate_share:
                yield recent[int(random_() * len(recent))]
                emitted += 1
                continue
            sku = skus[bisect(cumulative, random_() * total)]
            roll = random_()
            if self.flash_sale:
                roll = 0.12 + roll * 0.62
                if roll >= 0.58 and not open_reservations:
                    roll -= 0.18  # nothing to close yet: reserve instead (demand only)
            if roll < 0.12:
                location = dcs[int(random_() * len(dcs))]
                event = make(E.RECEIPT, sku, location, randint(10, 60))
                adjust(sku, location, event.quantity)
            elif roll < 0.40:
                location = store()
                event = make(E.SALE, sku, location, randint(1, 3))
                adjust(sku, location, -event.quantity)
            elif roll < 0.58:
                location = (dcs + pickup)[int(random_() * (len(dcs) + len(pickup)))]
                channel = "web" if location in dcs else "pickup"
                expires_at = None
                abandoned = False
                if self.expiring_share and random_() < self.expiring_share:
                    expires_at = clock + randint(*self.ttl_ms)
                    abandoned = random_() < self.abandon_share
                event = make(E.RESERVATION_CREATED, sku, location, randint(1, 4),
                             reservation_id=f"R{tag}-{serial + 1}", channel=channel,
                             expires_at=expires_at)
                if not abandoned:
                    open_reservations.append(event)
            elif roll < 0.74 and open_reservations:
                created = open_reservations.pop(int(random_() * len(open_reservations)))
                if random_() < 0.8:
                    event = make(E.RESERVATION_FULFILLED, created.sku, created.location_id,
                                 created.quantity, reservation_id=created.reservation_id)
                    adjust(created.sku, created.location_id, -created.quantity)
                else:
                    event = make(E.RESERVATION_RELEASED, created.sku, created.location_id, 0,
                                 reservation_id=created.reservation_id)
            elif roll < 0.80:
                origin = dcs[int(random_() * len(dcs))]
                event = make(E.TRANSFER_SHIPPED, sku, origin, randint(5, 40),
                             transfer_id=f"T{tag}-{serial + 1}",
                             counterparty_location_id=store())
                adjust(sku, origin, -event.quantity)
                in_flight.append(event)
            elif roll < 0.86 and in_flight:
                shipped = in_flight.pop(0)
                received = shipped.quantity - (randint(0, 2) if random_() < 0.2 else 0)
                destination = shipped.counterparty_location_id or ""
                event = make(E.TRANSFER_RECEIVED, shipped.sku, destination, received,
                             transfer_id=shipped.transfer_id,
                             counterparty_location_id=shipped.location_id)
                adjust(shipped.sku, destination, received)
            elif roll < 0.91:
                location = store()
                restockable = random_() < 0.7
                event = make(E.RETURN, sku, location, 1, restockable=restockable)
                if restockable:
                    adjust(sku, location, 1)
            elif roll < 0.96:
                location = (dcs + stores)[int(random_() * (len(dcs) + len(stores)))]
                event = make(E.ADJUSTMENT, sku, location, rng.choice((-2, -1, 1, 3)),
                             reason="cycle-check")
                adjust(sku, location, event.quantity)
            else:
                location = store() if random_() < 0.8 else dcs[int(random_() * len(dcs))]
                found = max(0, shelf.get((sku, location), 20) + randint(-2, 1))
                shelf[(sku, location)] = found
                event = make(E.COUNT, sku, location, found)
            recent.append(event)
            if len(recent) > 1000:
                del recent[:500]
            if self.late_share and random_() < self.late_share:
                release = clock + randint(MINUTE_MS, 30 * MINUTE_MS)
                heapq.heappush(held, (release, serial, event))
                continue
            yield event
            emitted += 1


def flash_sale_mix(base: Workload, factor: int = 10, hot_skus: int = 20,
                   seed_offset: int = 1_000) -> Workload:
    """The burst's extra traffic: demand on ``hot_skus`` SKUs, (factor - 1) x the base.

    Interleave ``factor - 1`` of its events with every base event for a 10x rush; its
    ids, reservations and transfers never collide with the base workload's.
    """
    if factor < 2:
        raise ValueError("a burst needs factor >= 2")
    return Workload(skus=base.skus, dcs=base.dcs, stores=base.stores,
                    seed=base.seed + seed_offset, start_ms=base.start_ms,
                    step_ms=max(1, base.step_ms // (factor - 1)), duplicate_share=0.0,
                    late_share=0.0, zipf_s=base.zipf_s, flash_sale=True, hot_skus=hot_skus,
                    expiring_share=base.expiring_share, ttl_ms=base.ttl_ms,
                    abandon_share=base.abandon_share, source="bench-flash")


def retail_workload(skus: int = 100_000, stores: int = 200, seed: int = 42,
                    start_ms: int = 1_795_000_000_000, expiring: bool = True,
                    step_ms: int = 8) -> Workload:
    """The benchmarks' retail chain: 100k SKUs (Zipf s=1.0), 3 DCs, 200 stores.

    ``step_ms=8`` puts 2M events in about 2.2 hours of event time (a peak afternoon).
    With ``expiring`` a quarter of reservations carry a 10-30 minute hold.
    """
    return Workload(skus=skus, dcs=3, stores=stores, seed=seed, start_ms=start_ms,
                    step_ms=step_ms, duplicate_share=0.01, late_share=0.005, zipf_s=1.0,
                    expiring_share=0.25 if expiring else 0.0)
