"""Published snapshot records and the per-SKU publisher that versions them.

Field names are a contract with ``schemas/avro``. Snapshots go to compacted topics and
consumers drop any version not newer than theirs, so the publisher emits a key only
when its value changed, and every version it gives a key is strictly greater than any
that key was ever given, by this run or an earlier one. Where versions come from is the
caller's choice (:data:`NextVersion`): the engine uses a clock that survives crashes
(see ``docs/semantics.md``), tests and the benchmark peers a plain counter.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, NamedTuple

from availability_contracts.keys import channel_key, position_key
from availability_domain.channels import (
    LocationContribution,
    channel_ats,
    pool,
    pooled_quantity,
)
from availability_domain.inventory import PositionQuantities, SkuInventory
from availability_domain.rules import ChannelRule, Rules

__all__ = [
    "ChannelSnapshot",
    "LocationContribution",
    "NextVersion",
    "PositionSnapshot",
    "Republished",
    "SnapshotPublisher",
    "count_versions",
]

NextVersion = Callable[[int], int]
"""Given a key's previous version (0: none), the version of its next snapshot; always
greater than the argument."""


def count_versions(previous: int) -> int:
    """Versions 1, 2, 3...: enough where one process publishes once, as in tests."""
    return previous + 1


class PositionSnapshot(NamedTuple):
    """Fields in the order of PositionAvailability.avsc (the Avro writer relies on it)."""

    sku: str
    location_id: str
    on_hand: int
    unsellable: int
    reserved: int
    in_transit: int
    safety_stock: int
    ats: int
    as_of: int
    version: int
    computed_at: int

    @property
    def key(self) -> str:
        return position_key(self.sku, self.location_id)

    def to_record(self) -> dict[str, Any]:
        return self._asdict()


class ChannelSnapshot(NamedTuple):
    """Fields in the order of ChannelAvailability.avsc (the Avro writer relies on it)."""

    channel: str
    sku: str
    location_id: str | None
    """None for a pooled channel."""
    ats: int
    as_of: int
    version: int
    computed_at: int
    locations: tuple[LocationContribution, ...]

    @property
    def key(self) -> str:
        return channel_key(self.channel, self.sku, self.location_id)

    def to_record(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "sku": self.sku,
            "location_id": self.location_id,
            "ats": self.ats,
            "as_of": self.as_of,
            "version": self.version,
            "computed_at": self.computed_at,
            "locations": [
                {"location_id": c.location_id, "ats": c.ats, "in_transit": c.in_transit}
                for c in self.locations
            ],
        }


class Republished(NamedTuple):
    """What :meth:`SnapshotPublisher.republish` publishes: snapshots and deleted keys."""

    positions: list[PositionSnapshot]
    channels: list[ChannelSnapshot]
    deleted_channels: list[str]
    """Channel keys to delete with a tombstone."""


_POSITION_RECORD = struct.Struct("<6i2q")
"""A published position in a recovery snapshot: its quantities (``as_of`` last), then
its version; quantities beyond 32 bits take :data:`_WIDE_POSITION_RECORD`."""
_WIDE_POSITION_RECORD = struct.Struct("<8q")


def _position_record(quantities: PositionQuantities, version: int) -> bytes:
    try:
        return _POSITION_RECORD.pack(*quantities, version)
    except struct.error:
        return _WIDE_POSITION_RECORD.pack(*quantities, version)


def _unpack_position_record(record: bytes) -> tuple[int, ...]:
    if len(record) == _POSITION_RECORD.size:
        return _POSITION_RECORD.unpack(record)
    return _WIDE_POSITION_RECORD.unpack(record)


ChannelSlot = tuple[str, str | None]
"""(channel, location_id or None for a pooled channel)."""


class ChannelPool:
    """A pooled channel's sum and latest ``as_of`` over its members' published
    quantities, and their contributions, kept up to date as members change: a channel
    pooling 200 locations is not re-added from scratch for each of its snapshots.

    Derived state (rebuilt after a restore); the result always equals
    :func:`~availability_domain.channels.pool` over the members.
    """

    __slots__ = ("as_of", "contributions", "rule", "total")

    def __init__(self, rule: ChannelRule, members: list[str],
                 published: dict[str, tuple[PositionQuantities, int]],
                 contribution: Callable[[str], LocationContribution]) -> None:
        self.rule = rule
        self.total, self.as_of = pool(rule, [published[member][0] for member in members])
        self.contributions = [contribution(member) for member in members]
        """In location order (the members are sorted)."""

    def _find(self, location_id: str) -> int | None:
        at = bisect.bisect_left(self.contributions, location_id, key=_location_of)
        if at < len(self.contributions) and self.contributions[at].location_id == location_id:
            return at
        return None

    def add(self, quantities: PositionQuantities, contribution: LocationContribution) -> None:
        """A new member."""
        bisect.insort(self.contributions, contribution, key=_location_of)
        self.total += pooled_quantity(self.rule, quantities)
        if quantities.as_of > self.as_of:
            self.as_of = quantities.as_of

    def update(self, old: PositionQuantities, new: PositionQuantities,
               contribution: LocationContribution) -> bool:
        """A member's new quantities, if the location is one; False when the pool must
        be rebuilt instead (its latest ``as_of`` went back)."""
        at = self._find(contribution.location_id)
        if at is None:
            return True
        if new.as_of < old.as_of and old.as_of >= self.as_of:
            return False
        self.total += pooled_quantity(self.rule, new) - pooled_quantity(self.rule, old)
        if new.as_of > self.as_of:
            self.as_of = new.as_of
        self.contributions[at] = contribution
        return True


def _location_of(contribution: LocationContribution) -> str:
    return contribution.location_id


class SnapshotPublisher:
    """Last published value and version per key, for one SKU's state.

    ``positions`` and ``channels`` are the state. Recovery snapshots take the positions
    as a fixed-width record per location, packed whenever one is published: a snapshot
    of a SKU with 200 locations copies bytes instead of pickling 200 tuples of numbers
    again at every epoch. The member lists and contribution tuples are derived from the
    state and rebuilt after a restore.
    """

    __slots__ = ("_contributions", "_members", "_pools", "_position_records", "channels",
                 "positions")

    def __init__(
        self,
        positions: dict[str, tuple[PositionQuantities, int]] | None = None,
        channels: dict[ChannelSlot, tuple[tuple[Any, ...], int]] | None = None,
    ) -> None:
        self.positions = positions if positions is not None else {}
        """location_id -> (last published quantities, version). A position's channels are
        recomputed from these: an untouched position cannot have changed since it was
        published, and a position whose value did not change cannot move a channel."""
        self.channels = channels if channels is not None else {}
        """(channel, location_id or None) -> ((ats, as_of), version)."""
        self._members: dict[str, list[str]] = {}
        """Pooled channel -> its eligible published locations, sorted."""
        self._contributions: dict[str, LocationContribution] = {}
        """Location -> its contribution to its per-location channels."""
        self._pools: dict[str, ChannelPool] = {}
        self._position_records = {
            location_id: _position_record(quantities, version)
            for location_id, (quantities, version) in self.positions.items()}

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        try:
            return _publisher_blob, (pack_publisher(self._position_records, self.channels),)
        except (struct.error, OverflowError):  # a channel number beyond 64 bits
            return _publisher_records, (self._position_records, self.channels)

    def _record_position(self, location_id: str, quantities: PositionQuantities,
                         version: int, channel_names: frozenset[str]) -> None:
        """Publish a position's quantities here and in the derived channel state."""
        previous = self.positions.get(location_id)
        self.positions[location_id] = (quantities, version)
        self._position_records[location_id] = _position_record(quantities, version)
        self._contributions.pop(location_id, None)
        if previous is None:  # a new member of its channels
            for name in channel_names:
                members = self._members.get(name)
                if members is not None:
                    bisect.insort(members, location_id)
                channel = self._pools.get(name)
                if channel is not None:
                    channel.add(quantities, self._contribution(location_id))
            return
        if not self._pools:
            return
        contribution = self._contribution(location_id)
        stale = [name for name, channel in self._pools.items()
                 if not channel.update(previous[0], quantities, contribution)]
        for name in stale:
            del self._pools[name]

    def publish(
        self,
        inventory: SkuInventory,
        touched: Iterable[str],
        rules: Rules,
        now_ms: int,
        computed_at: int,
        next_version: NextVersion = count_versions,
        forced: Collection[str] = (),
    ) -> tuple[list[PositionSnapshot], list[ChannelSnapshot]]:
        """Snapshots whose value changed because of ``touched`` locations.

        Expiry is brought up to ``now_ms`` first (the locations it changes count as
        touched), so a snapshot never counts a reservation that has already expired.
        Only channels of a location whose value changed are recomputed. Each ``forced``
        location's position and channels are published under a fresh version even if
        unchanged: after a crash a consumer may hold a number for them that the restored
        state never recorded, which only a newer version replaces.
        """
        sku = inventory.sku
        affected = dict.fromkeys(touched)
        expired = inventory.expire(now_ms)
        if expired:
            affected.update(dict.fromkeys(expired))
        if forced:
            affected.update(dict.fromkeys(forced))
        positions = inventory.positions
        published = self.positions
        position_snapshots: list[PositionSnapshot] = []
        changed: list[tuple[str, frozenset[str]]] = []
        """Changed locations and their channels."""
        channel_names: set[str] = set()
        moved: set[str] = set()
        """Changed locations whose channel contribution (ats, in_transit) moved too."""
        moved_channels: set[str] = set()
        for location_id in affected:
            if location_id not in positions:
                continue
            quantities = inventory.position_quantities(location_id, rules)
            previous = published.get(location_id)
            if previous is not None and previous[0] == quantities and (
                    not forced or location_id not in forced):
                continue
            names = rules.channel_names_for(location_id)
            if previous is None:
                version = next_version(0)
                moved.add(location_id)
                moved_channels.update(names)
            else:
                version = next_version(previous[1])
                old = previous[0]
                if (old.ats != quantities.ats or old.in_transit != quantities.in_transit
                        or location_id in forced):
                    moved.add(location_id)
                    moved_channels.update(names)
            self._record_position(location_id, quantities, version, names)
            changed.append((location_id, names))
            channel_names.update(names)
            position_snapshots.append(
                PositionSnapshot(sku, location_id, *quantities, version, computed_at)
            )

        channel_snapshots: list[ChannelSnapshot] = []
        if not channel_names:
            return position_snapshots, channel_snapshots
        for rule in rules.channels.values():
            name = rule.name
            if name not in channel_names:
                continue
            if rule.per_location:
                for location_id, names in changed:
                    if name in names:
                        self._emit_location(rule, sku, location_id, location_id in moved,
                                            computed_at, channel_snapshots, next_version)
            else:
                self._emit_pooled(rule, sku, rules, name in moved_channels, computed_at,
                                  channel_snapshots, next_version)
        return position_snapshots, channel_snapshots

    def republish(
        self,
        inventory: SkuInventory,
        rules: Rules,
        now_ms: int,
        computed_at: int,
        next_version: NextVersion,
        *,
        everything: bool,
    ) -> Republished:
        """Bring every key of the SKU in line with ``rules`` and the current state.

        Used when the rules may have changed and after a restore. With ``everything``
        each key is published again under a fresh version even if its value is what was
        last recorded here: after a crash, a consumer may hold a newer snapshot than the
        restored state knows of, which only a fresh version can replace. Channel keys
        the rules no longer give a number (a removed channel, a location no longer
        eligible) come back as ``deleted`` and are forgotten: their tombstones.
        """
        sku = inventory.sku
        inventory.expire(now_ms)
        self._members.clear()
        self._contributions.clear()
        self._pools.clear()
        positions: list[PositionSnapshot] = []
        moved: set[str] = set()
        published = self.positions
        for location_id in inventory.positions:
            quantities = inventory.position_quantities(location_id, rules)
            previous = published.get(location_id)
            if previous is not None and previous[0] == quantities and not everything:
                continue
            if previous is None or (previous[0].ats, previous[0].in_transit) != (
                    quantities.ats, quantities.in_transit):
                moved.add(location_id)
            version = next_version(0 if previous is None else previous[1])
            self._record_position(location_id, quantities, version,
                                  rules.channel_names_for(location_id))
            positions.append(PositionSnapshot(sku, location_id, *quantities, version,
                                              computed_at))

        channels: list[ChannelSnapshot] = []
        wanted: set[ChannelSlot] = set()
        for rule in rules.channels.values():
            members = self._members_of(rule.name, rules)
            if not members:
                continue
            if rule.per_location:
                for location_id in members:
                    wanted.add((rule.name, location_id))
                    self._emit_location(rule, sku, location_id,
                                        everything or location_id in moved, computed_at,
                                        channels, next_version)
            else:
                wanted.add((rule.name, None))
                self._emit_pooled(rule, sku, rules,
                                  everything or not moved.isdisjoint(members), computed_at,
                                  channels, next_version)
        deleted = [channel_key(name, sku, location_id)
                   for name, location_id in self.channels if (name, location_id) not in wanted]
        for slot in [slot for slot in self.channels if slot not in wanted]:
            del self.channels[slot]
        return Republished(positions, channels, deleted)

    def _members_of(self, channel: str, rules: Rules) -> list[str]:
        members = self._members.get(channel)
        if members is None:
            members = sorted(location_id for location_id in self.positions
                             if channel in rules.channel_names_for(location_id))
            self._members[channel] = members
        return members

    def _contribution(self, location_id: str) -> LocationContribution:
        found = self._contributions.get(location_id)
        if found is None:
            quantities = self.positions[location_id][0]
            found = LocationContribution(location_id, quantities.ats, quantities.in_transit)
            self._contributions[location_id] = found
        return found

    def _emit_location(self, rule: ChannelRule, sku: str, location_id: str,
                       moved: bool, computed_at: int, out: list[ChannelSnapshot],
                       next_version: NextVersion) -> None:
        pooled, as_of = pool(rule, (self.positions[location_id][0],))
        self._emit(rule, sku, location_id, pooled, as_of, (self._contribution(location_id),),
                   moved, computed_at, out, next_version)

    def _emit_pooled(self, rule: ChannelRule, sku: str, rules: Rules, members_moved: bool,
                     computed_at: int, out: list[ChannelSnapshot],
                     next_version: NextVersion) -> None:
        channel = self._pools.get(rule.name)
        if channel is None:
            channel = self._pools[rule.name] = ChannelPool(
                rule, self._members_of(rule.name, rules), self.positions, self._contribution)
        self._emit(rule, sku, None, channel.total, channel.as_of, channel.contributions,
                   members_moved, computed_at, out, next_version)

    def _emit(self, rule: ChannelRule, sku: str, location_id: str | None, pooled: int,
              as_of: int, contributions: Sequence[LocationContribution], members_moved: bool,
              computed_at: int, out: list[ChannelSnapshot], next_version: NextVersion
              ) -> None:
        """Append one channel number if it changed.

        The stored value is only ``(ats, as_of)``: the contributions are a function of
        the published positions, and whether one of them moved is ``members_moved``, so
        the state snapshotted every epoch does not carry a tuple per member location.
        """
        value = (channel_ats(rule, pooled), as_of)
        key = (rule.name, location_id)
        previous = self.channels.get(key)
        if previous is not None and previous[0] == value and not members_moved:
            return
        version = next_version(0 if previous is None else previous[1])
        self.channels[key] = (value, version)
        out.append(ChannelSnapshot(rule.name, sku, location_id, value[0], as_of, version,
                                   computed_at, tuple(contributions)))


_COUNTS = struct.Struct("<II")
_CHANNEL_VALUE = struct.Struct("<3q")
_NONE = 0xFE
_LONG_TEXT = 0xFF
_TEXT_LENGTH = struct.Struct("<I")


def _pack_text(text: str | None) -> bytes:
    if text is None:
        return bytes((_NONE,))
    data = text.encode()
    if len(data) < _NONE:
        return bytes((len(data),)) + data
    return bytes((_LONG_TEXT,)) + _TEXT_LENGTH.pack(len(data)) + data


def pack_publisher(position_records: dict[str, bytes],
                   channels: dict[ChannelSlot, tuple[tuple[Any, ...], int]]) -> bytes:
    """A publisher's state as one bytes object, the form a recovery snapshot takes.

    One bytes object instead of a dict of records and a dict of channel tuples: the
    engine snapshots every touched SKU at every epoch end, and building and pickling
    those dicts took 40 % of that pause. Layout (little-endian), the compiled
    publisher's too: the position and channel counts (``<II``); per position its
    location (text) and its record (length byte, then :data:`_POSITION_RECORD` or
    :data:`_WIDE_POSITION_RECORD`); per channel slot, in insertion order, the channel
    and the location (text; None for a pooled channel), then ``ats``, ``as_of`` and the
    version (``<3q``). A text is a length byte and UTF-8, the length byte 0xFF followed
    by a ``<I`` length for 254 bytes or more, and the byte 0xFE alone for None.
    """
    parts = [_COUNTS.pack(len(position_records), len(channels))]
    for location_id, record in position_records.items():
        parts += (_pack_text(location_id), bytes((len(record),)), record)
    for (name, channel_location), ((ats, as_of), version) in channels.items():
        parts += (_pack_text(name), _pack_text(channel_location),
                  _CHANNEL_VALUE.pack(ats, as_of, version))
    return b"".join(parts)


def _unpack_text(data: bytes, at: int) -> tuple[str | None, int]:
    length = data[at]
    at += 1
    if length == _NONE:
        return None, at
    if length == _LONG_TEXT:
        (length,) = _TEXT_LENGTH.unpack_from(data, at)
        at += _TEXT_LENGTH.size
    if at + length > len(data):
        raise ValueError("a publisher snapshot ends inside a text")
    return data[at:at + length].decode(), at + length


def unpack_publisher(data: bytes) -> tuple[dict[str, bytes],
                                             dict[ChannelSlot, tuple[tuple[int, int], int]]]:
    """The inverse of :func:`pack_publisher`: position records and channel values."""
    try:
        positions, slots = _COUNTS.unpack_from(data, 0)
        at = _COUNTS.size
        records: dict[str, bytes] = {}
        for _ in range(positions):
            location_id, at = _unpack_text(data, at)
            length = data[at]
            if location_id is None or length not in (_POSITION_RECORD.size,
                                                     _WIDE_POSITION_RECORD.size):
                raise ValueError(f"a published position record of {length} bytes "
                                 f"({_POSITION_RECORD.size} or {_WIDE_POSITION_RECORD.size} "
                                 f"expected)")
            record = data[at + 1:at + 1 + length]
            if len(record) != length:
                raise ValueError("a publisher snapshot ends inside a position record")
            records[location_id] = record
            at += 1 + length
        channels: dict[ChannelSlot, tuple[tuple[int, int], int]] = {}
        for _ in range(slots):
            name, at = _unpack_text(data, at)
            location_id, at = _unpack_text(data, at)
            ats, as_of, version = _CHANNEL_VALUE.unpack_from(data, at)
            at += _CHANNEL_VALUE.size
            if name is None:
                raise ValueError("a channel slot without a channel name")
            channels[(name, location_id)] = ((ats, as_of), version)
    except (IndexError, struct.error) as error:
        raise ValueError(f"a publisher snapshot ends early: {error}") from error
    if at != len(data):
        raise ValueError(f"a publisher snapshot has {len(data) - at} bytes after its end")
    return records, channels


def _publisher_blob(data: bytes) -> SnapshotPublisher:
    """A publisher from :meth:`SnapshotPublisher.__reduce__` (snapshots name it: keep it)."""
    return _publisher_records(*unpack_publisher(data))


def _publisher_records(positions: dict[str, bytes],
                       channels: dict[ChannelSlot, tuple[tuple[Any, ...], int]]
                       ) -> SnapshotPublisher:
    """A publisher from a snapshot written before :func:`_publisher_blob`, or one with a
    channel number beyond 64 bits (snapshots name it: keep it)."""
    published = {}
    for location_id, record in positions.items():
        *quantities, version = _unpack_position_record(record)
        published[location_id] = (PositionQuantities(*quantities), version)
    publisher = SnapshotPublisher(channels=channels)
    publisher.positions, publisher._position_records = published, positions
    return publisher


def _publisher(positions: dict[str, tuple[tuple[int, ...], int]],
               channels: dict[ChannelSlot, tuple[tuple[Any, ...], int]]
               ) -> SnapshotPublisher:
    """A publisher from a snapshot written before :func:`_publisher_records` (keep it)."""
    return SnapshotPublisher({location_id: (PositionQuantities(*quantities), version)
                              for location_id, (quantities, version) in positions.items()},
                             channels)
