"""The engine's four topics: their default names and the configs they are created with."""

from __future__ import annotations

from dataclasses import dataclass

COMPACTED = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicNames:
    events: str = "inventory.events"
    dlq: str = "inventory.events.dlq"
    positions: str = "availability.positions"
    channels: str = "availability.channels"

    def configs(self) -> dict[str, dict[str, str]]:
        """Topic name -> topic config; the snapshot topics are compacted."""
        return {self.events: {}, self.dlq: {}, self.positions: COMPACTED,
                self.channels: COMPACTED}
