"""Channel availability formulas, pure functions of position quantities.

Pooled: ``min(max_quantity, max(0, floor(allocation * sum(ats [+ in_transit])) - buffer))``
over every eligible position of the SKU; a per-location channel applies the same formula
to each eligible position alone. Each result carries the contributing locations so a
number can be explained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from availability_domain.inventory import PositionQuantities, saturate
from availability_domain.rules import ChannelRule, Rules


class LocationContribution(NamedTuple):
    """One eligible position's part of a channel number."""

    location_id: str
    ats: int
    in_transit: int


@dataclass(frozen=True, slots=True)
class ChannelAvailability:
    channel: str
    sku: str
    location_id: str | None
    """None for a pooled channel."""
    ats: int
    as_of: int
    locations: tuple[LocationContribution, ...]


def pooled_quantity(rule: ChannelRule, quantities: PositionQuantities) -> int:
    """What one eligible position adds to a channel's pool: ats [+ in_transit]."""
    if rule.include_in_transit:
        return quantities.ats + quantities.in_transit
    return quantities.ats


def pool(rule: ChannelRule, members: Iterable[PositionQuantities]) -> tuple[int, int]:
    """What a channel pools from its eligible positions: (sum of
    :func:`pooled_quantity`, latest as_of)."""
    pooled = 0
    as_of = 0
    for quantities in members:
        pooled += pooled_quantity(rule, quantities)
        if quantities.as_of > as_of:
            as_of = quantities.as_of
    return pooled, as_of


def channel_ats(rule: ChannelRule, pooled: int) -> int:
    """The channel formula applied to a pooled quantity (exact: allocation is a Fraction)."""
    allocation = rule.allocation
    value = (allocation.numerator * pooled) // allocation.denominator - rule.buffer
    if value < 0:
        return 0
    if rule.max_quantity is not None and value > rule.max_quantity:
        return rule.max_quantity
    return saturate(value)


def availability(
    rule: ChannelRule,
    sku: str,
    positions: Sequence[tuple[str, PositionQuantities]],
    location_id: str | None = None,
) -> ChannelAvailability:
    """One channel number from the given, already eligible, non-empty positions."""
    pooled, as_of = pool(rule, [quantities for _, quantities in positions])
    return ChannelAvailability(
        channel=rule.name,
        sku=sku,
        location_id=location_id,
        ats=channel_ats(rule, pooled),
        as_of=as_of,
        locations=tuple(
            sorted(
                LocationContribution(loc, quantities.ats, quantities.in_transit)
                for loc, quantities in positions
            )
        ),
    )


def channel_availability(
    rule: ChannelRule,
    sku: str,
    positions: Mapping[str, PositionQuantities],
    rules: Rules,
) -> list[ChannelAvailability]:
    """Every number ``rule`` has for ``sku``: none if no position is eligible."""
    eligible = [
        (location_id, quantities)
        for location_id, quantities in positions.items()
        if rules.is_eligible(rule.name, location_id)
    ]
    if not eligible:
        return []
    if rule.per_location:
        return [
            availability(rule, sku, [(location_id, quantities)], location_id)
            for location_id, quantities in sorted(eligible, key=_by_location)
        ]
    return [availability(rule, sku, eligible)]


def _by_location(item: tuple[str, PositionQuantities]) -> str:
    return item[0]
