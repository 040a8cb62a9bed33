"""The engine's four topics: their default names, their roles and the configs each is
created with (``availability topics create``; docs/operations.md, "Topics").

The snapshot topics (``availability.positions``, ``availability.channels``) stand for
tables: only the latest value per key matters, so they are compacted, and tuned so that
the log stays close to one record per key instead of growing with the update rate:

``cleanup.policy=compact``
    keep the latest value per key (a null value, a tombstone, deletes the key).
``segment.ms=900000`` (15 min; broker default 7 days)
    the cleaner only touches closed segments. With the default, a busy week of updates
    would sit uncompacted in the active segment, and every new replica would read it.
``min.cleanable.dirty.ratio=0.1`` (default 0.5)
    clean when 10 % of the closed log has been overwritten, so the log stays within
    about 10 % (plus the active segment) of one record per key; the topics hold one
    small record per key, so cleaning more often costs little.
``min.compaction.lag.ms=0`` (the default, pinned)
    consumers need no history: an overwritten value may go at once.
``max.compaction.lag.ms=3600000`` (1 h; default unbounded)
    an overwritten value is cleaned within about an hour even while the dirty ratio
    stays under 10 % (a few hot keys on a large table); Kafka also rolls the active
    segment at this age.
``delete.retention.ms=604800000`` (7 days; default 1 day)
    how long a tombstone survives compaction. A consumer that stops for longer and
    resumes from its offsets may miss a deletion (the tombstone and the value it
    deletes are both gone), and a consumer reading from the beginning must reach the
    end within that time to see every deletion. Tombstones are rare (rules changes
    only), so a week, covering a replica or a feed stopped over a long weekend, costs
    next to nothing.

``inventory.events`` is the source of truth and keeps every event for
``retention.ms=604800000`` (7 days, the broker default pinned so that the topic does
not depend on the cluster's default): a rebuild from the event log can only replay
what is retained. ``inventory.events.dlq`` keeps dead letters for 30 days, time for
people to look at them and re-publish repaired events.

With a replication factor of 3 or more every topic also gets
``min.insync.replicas=2``: producers write with ``acks=all``, so an acknowledged
record is on at least two brokers, and one broker may be down without stopping writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from availability_contracts.errors import AvailabilityError

Role = Literal["events", "dlq", "positions", "channels"]
ROLES: Final[tuple[Role, ...]] = ("events", "dlq", "positions", "channels")
SNAPSHOT_ROLES: Final[tuple[Role, ...]] = ("positions", "channels")

ROLE_GROUPS: Final[Mapping[str, tuple[Role, ...]]] = MappingProxyType({
    "all": ROLES,
    "snapshots": SNAPSHOT_ROLES,
    "events": ("events",),
    "dlq": ("dlq",),
    "positions": ("positions",),
    "channels": ("channels",),
})
"""What may prefix a ``--config`` override: one topic's role, or a group of them."""

SNAPSHOT_CONFIG: Final[Mapping[str, str]] = MappingProxyType({
    "cleanup.policy": "compact",
    "segment.ms": "900000",
    "min.cleanable.dirty.ratio": "0.1",
    "min.compaction.lag.ms": "0",
    "max.compaction.lag.ms": "3600000",
    "delete.retention.ms": "604800000",
})
EVENTS_CONFIG: Final[Mapping[str, str]] = MappingProxyType({
    "cleanup.policy": "delete",
    "retention.ms": "604800000",
})
DLQ_CONFIG: Final[Mapping[str, str]] = MappingProxyType({
    "cleanup.policy": "delete",
    "retention.ms": "2592000000",
})
ROLE_CONFIGS: Final[Mapping[Role, Mapping[str, str]]] = MappingProxyType({
    "events": EVENTS_CONFIG, "dlq": DLQ_CONFIG,
    "positions": SNAPSHOT_CONFIG, "channels": SNAPSHOT_CONFIG,
})

REPLICATED_MIN_INSYNC: Final = "2"
"""``min.insync.replicas`` given to every topic with a replication factor of 3 or more."""

FIXED_KEYS: Final[Mapping[str, str]] = MappingProxyType({
    "cleanup.policy": "the snapshot topics must be compacted (a consumer rebuilds the "
                      "table from them) and the event log must not be (compaction would "
                      "drop events that share a key)",
})
"""Settings ``--config`` may not change, and why."""

_KEY = re.compile(r"[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*")


class TopicConfigError(AvailabilityError, ValueError):
    """A topic config override that cannot be used; the message says why."""

    code = "topic_config"


@dataclass(frozen=True)
class ConfigOverride:
    """One ``[ROLE:]key=value`` of ``availability topics create --config``."""

    roles: tuple[Role, ...]
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> ConfigOverride:
        """``key=value`` (every topic) or ``ROLE:key=value``, ROLE one of
        :data:`ROLE_GROUPS` (``events``, ``dlq``, ``positions``, ``channels``,
        ``snapshots`` for both snapshot topics, ``all``)."""
        setting, sep, value = text.partition("=")
        if not sep:
            raise TopicConfigError(f"{text!r}: expected [ROLE:]key=value")
        group, colon, key = setting.strip().rpartition(":")
        key = key.strip()
        if not colon:
            group = "all"
        group = group.strip()
        if group not in ROLE_GROUPS:
            raise TopicConfigError(f"{text!r}: unknown topic role {group!r} (one of "
                                   f"{', '.join(ROLE_GROUPS)})")
        if not _KEY.fullmatch(key):
            raise TopicConfigError(f"{text!r}: {key!r} is not a topic config name "
                                   "(like segment.ms)")
        if key in FIXED_KEYS:
            raise TopicConfigError(f"{text!r}: {key} cannot be changed: {FIXED_KEYS[key]}")
        value = value.strip()
        if not value:
            raise TopicConfigError(f"{text!r}: empty value")
        return cls(ROLE_GROUPS[group], key, value)


@dataclass(frozen=True)
class TopicNames:
    events: str = "inventory.events"
    dlq: str = "inventory.events.dlq"
    positions: str = "availability.positions"
    channels: str = "availability.channels"

    def by_role(self) -> dict[Role, str]:
        """Role -> topic name, in the order of :data:`ROLES`."""
        return {"events": self.events, "dlq": self.dlq, "positions": self.positions,
                "channels": self.channels}

    def compacted(self) -> tuple[str, ...]:
        """The snapshot topics' names."""
        return (self.positions, self.channels)

    def configs(self, overrides: Iterable[ConfigOverride] = (),
                replication_factor: int = 1) -> dict[str, dict[str, str]]:
        """Topic name -> the config it is created with: its role's defaults, then
        ``min.insync.replicas=2`` when ``replication_factor`` >= 3, then ``overrides``
        in order (a later one wins). Refuses a ``min.insync.replicas`` above
        ``replication_factor``, which Kafka accepts but which stops every write."""
        names = self.by_role()
        if len(set(names.values())) < len(names):
            raise TopicConfigError(f"the four topics need four different names: {names}")
        configs: dict[str, dict[str, str]] = {}
        for role, name in names.items():
            config = dict(ROLE_CONFIGS[role])
            if replication_factor >= 3:
                config["min.insync.replicas"] = REPLICATED_MIN_INSYNC
            configs[name] = config
        for override in overrides:
            for role in override.roles:
                configs[names[role]][override.key] = override.value
        for name, config in configs.items():
            insync = config.get("min.insync.replicas", "1")
            if insync.isdigit() and int(insync) > replication_factor:
                raise TopicConfigError(
                    f"{name}: min.insync.replicas={insync} is more than the replication "
                    f"factor {replication_factor}: every acks=all write would be refused")
        return configs
