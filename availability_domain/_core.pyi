# The compiled core of native/domain; see dataflows.snapshot_output and availability_domain.events.
from collections.abc import Callable, Collection, Iterable
from typing import Any

from availability_domain.events import InventoryEvent
from availability_domain.inventory import SkuInventory
from availability_domain.rules import Rules
from availability_domain.snapshots import SnapshotPublisher

class SnapshotTopics:
    def __init__(self, record_type: type[tuple[Any, ...]], positions: str, channels: str,
                 position_header: bytes, channel_header: bytes) -> None: ...

class CompiledPublisher:
    def __init__(self) -> None: ...
    @staticmethod
    def from_reference(publisher: SnapshotPublisher) -> CompiledPublisher: ...
    @staticmethod
    def from_blob(data: bytes) -> CompiledPublisher: ...
    @staticmethod
    def from_records(positions: dict[str, bytes],
                     channels: dict[tuple[str, str | None], tuple[tuple[int, int], int]]
                     ) -> CompiledPublisher: ...
    def to_reference(self) -> SnapshotPublisher: ...
    def __reduce__(self) -> tuple[Any, ...]: ...
    def publish_records(self, inventory: SkuInventory, touched: Iterable[str], rules: Rules,
                        now_ms: int, computed_at: int, next_version: Callable[[int], int],
                        forced: Collection[str], origin_ms: int, topics: SnapshotTopics
                        ) -> tuple[list[Any], int, int]: ...

def read_valid_event(data: bytes, pos: int) -> InventoryEvent | None: ...
