"""A deterministic retail workload: what ERP, WMS, POS and the web shop would send.

Zipf-popular SKUs over DCs and stores, with receipts, store sales, adjustments,
returns (some damaged), DC->store transfers shipped then received (some short),
reservation lifecycles (fulfilled or released), periodic counts and a share of
duplicates. The same seed gives the same events. Reservations get no expiry here so
that the folded result does not depend on the wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from dataflows.domain.events import EventType, InventoryEvent


@dataclass(frozen=True)
class Workload:
    skus: int = 2_000
    dcs: int = 3
    stores: int = 20
    seed: int = 7
    start_ms: int = 1_795_000_000_000
    step_ms: int = 50
    duplicate_share: float = 0.01
    zipf_s: float = 1.1
    flash_sale: bool = False
    """Demand only (store sales and web reservations, mostly fulfilled): a sale rush."""

    @property
    def locations(self) -> list[str]:
        return [f"DC{i + 1}" for i in range(self.dcs)] + [
            f"S{i + 1:03d}" for i in range(self.stores)
        ]

    def events(self, count: int) -> Iterator[InventoryEvent]:
        """``count`` events (duplicates included), in a plausible arrival order."""
        rng = random.Random(self.seed)
        weights = [1 / (rank + 1) ** self.zipf_s for rank in range(self.skus)]
        skus = [f"SKU-{i:06d}" for i in range(self.skus)]
        dcs = self.locations[: self.dcs]
        stores = self.locations[self.dcs :]
        clock = self.start_ms
        open_reservations: list[InventoryEvent] = []
        in_flight: list[InventoryEvent] = []
        recent: list[InventoryEvent] = []
        serial = 0
        emitted = 0
        E = EventType

        def make(kind: EventType, sku: str, location: str, quantity: int,
                 **extra: object) -> InventoryEvent:
            nonlocal serial
            serial += 1
            return InventoryEvent(f"ev-{self.seed}-{serial}", kind, clock, "bench", sku,
                                  location, quantity, **extra)  # type: ignore[arg-type]

        while emitted < count:
            clock += rng.randint(0, self.step_ms)
            if recent and rng.random() < self.duplicate_share:
                yield rng.choice(recent)
                emitted += 1
                continue
            sku = rng.choices(skus, weights)[0]
            roll = rng.random()
            if self.flash_sale:
                roll = 0.12 + roll * 0.62
            if roll < 0.12:
                event = make(E.RECEIPT, sku, rng.choice(dcs), rng.randint(10, 60))
            elif roll < 0.40:
                event = make(E.SALE, sku, rng.choice(stores), rng.randint(1, 3))
            elif roll < 0.58:
                event = make(E.RESERVATION_CREATED, sku, rng.choice(dcs + stores[:5]),
                             rng.randint(1, 4), reservation_id=f"R{serial}", channel="web")
                open_reservations.append(event)
            elif roll < 0.74 and open_reservations:
                created = open_reservations.pop(rng.randrange(len(open_reservations)))
                if rng.random() < 0.8:
                    event = make(E.RESERVATION_FULFILLED, created.sku, created.location_id,
                                 created.quantity, reservation_id=created.reservation_id)
                else:
                    event = make(E.RESERVATION_RELEASED, created.sku, created.location_id, 0,
                                 reservation_id=created.reservation_id)
            elif roll < 0.80:
                event = make(E.TRANSFER_SHIPPED, sku, rng.choice(dcs), rng.randint(5, 40),
                             transfer_id=f"T{serial}", counterparty_location_id=rng.choice(stores))
                in_flight.append(event)
            elif roll < 0.86 and in_flight:
                shipped = in_flight.pop(0)
                received = shipped.quantity - (rng.randint(0, 2) if rng.random() < 0.2 else 0)
                event = make(E.TRANSFER_RECEIVED, shipped.sku, shipped.counterparty_location_id
                             or "", received, transfer_id=shipped.transfer_id,
                             counterparty_location_id=shipped.location_id)
            elif roll < 0.91:
                event = make(E.RETURN, sku, rng.choice(stores), 1,
                             restockable=rng.random() < 0.7)
            elif roll < 0.96:
                event = make(E.ADJUSTMENT, sku, rng.choice(dcs + stores),
                             rng.choice([-2, -1, 1, 3]), reason="cycle-check")
            else:
                event = make(E.COUNT, sku, rng.choice(stores), rng.randint(0, 60))
            recent.append(event)
            if len(recent) > 1000:
                del recent[:500]
            yield event
            emitted += 1
