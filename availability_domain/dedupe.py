"""Ids remembered for the dedupe horizon: the event ids a SKU has applied, and the
tombstones of closed reservations and received transfers.

Why not a plain dict: the engine's recovery snapshot of a SKU is its whole state, taken
at the end of every epoch in which the SKU changed. A best seller remembers hundreds of
thousands of ids within the horizon, and pickling all of them again at every epoch made
the checkpoint pause grow with history (3 s per 50,000 events after 1M events of the
benchmark chain). Here ids go to an open chunk; a full chunk is sealed: pickled once and
kept as bytes, which a snapshot then copies instead of pickling the ids again. The open
chunk is kept pickled too, one small pickle per id appended as the id arrives, so a
snapshot copies it as well (pickling the open ids again at every epoch was a third of
the cost of a touched SKU's snapshot). Lookups use one dict of every remembered id.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator, Mapping
from typing import NamedTuple

CHUNK_IDS = 2048
"""Ids per sealed chunk: the open chunk pickled at each snapshot stays this small."""
TOMBSTONE_CHUNK = 32
"""Ids per sealed chunk of a position's tombstones: a SKU has a memory per position."""


class SealedChunk(NamedTuple):
    oldest: int
    newest: int
    ids: bytes
    """The pickled list of (event_id, occurred_at) pairs."""

    @classmethod
    def of(cls, pairs: list[tuple[str, int]]) -> SealedChunk:
        times = [at for _, at in pairs]
        return cls(min(times), max(times), pickle.dumps(pairs, protocol=pickle.HIGHEST_PROTOCOL))

    def pairs(self) -> list[tuple[str, int]]:
        pairs: list[tuple[str, int]] = pickle.loads(self.ids)
        return pairs


class RememberedIds:
    """Id -> event time; :meth:`forget_before` drops the old ones."""

    __slots__ = ("_all", "_chunk", "_open", "_open_pickled", "_sealed")

    def __init__(self, ids: Mapping[str, int] | None = None, chunk: int = CHUNK_IDS) -> None:
        self._chunk = chunk
        self._all: dict[str, int] = dict(ids) if ids else {}
        self._open: list[tuple[str, int]] = list(self._all.items())
        self._open_pickled = bytearray()
        """The open chunk as what a snapshot stores: one pickle per pair, concatenated."""
        self._sealed: list[SealedChunk] = []
        while len(self._open) >= chunk:
            self._seal()
        self._repickle_open()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._all

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def get(self, event_id: str) -> int | None:
        return self._all.get(event_id)

    def add(self, event_id: str, occurred_at: int) -> None:
        """Remember an id not remembered yet (the caller checked)."""
        self._all[event_id] = occurred_at
        pair = (event_id, occurred_at)
        self._open.append(pair)
        if len(self._open) >= self._chunk:
            self._seal()
        else:
            self._open_pickled += pickle.dumps(pair, _PAIR_PROTOCOL)

    def set_later(self, event_id: str, occurred_at: int) -> None:
        """A later time for a remembered id (a tombstone closed again): appended like a
        new one, since the newest entry wins on restore (chunks are read in the order
        they were written)."""
        self.add(event_id, occurred_at)

    def forget_before(self, cutoff: int) -> None:
        """Forget every id that occurred before ``cutoff``: chunks wholly before it go, the
        few that straddle it are sealed again without the forgotten ids."""
        self._all = {event_id: at for event_id, at in self._all.items() if at >= cutoff}
        self._open = [(event_id, at) for event_id, at in self._open if at >= cutoff]
        self._repickle_open()
        kept: list[SealedChunk] = []
        for chunk in self._sealed:
            if chunk.oldest >= cutoff:
                kept.append(chunk)
            elif chunk.newest >= cutoff:
                kept.append(SealedChunk.of([pair for pair in chunk.pairs() if pair[1] >= cutoff]))
        self._sealed = kept

    def _seal(self) -> None:
        chunk, self._open = self._open[:self._chunk], self._open[self._chunk:]
        self._sealed.append(SealedChunk.of(chunk))
        self._repickle_open()

    def _repickle_open(self) -> None:
        self._open_pickled = bytearray(
            b"".join(pickle.dumps(pair, _PAIR_PROTOCOL) for pair in self._open))

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return _restore, ([tuple(chunk) for chunk in self._sealed], bytes(self._open_pickled),
                          self._chunk)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RememberedIds):
            return self._all == other._all
        if isinstance(other, Mapping):
            return self._all == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"RememberedIds({len(self._all)} ids, {len(self._sealed)} sealed chunks)"


_PAIR_PROTOCOL = 2
"""Protocol 2 has no framing: 4 bytes of overhead per pickled pair (protocol 4: 13)."""


def _unpickle_pairs(data: bytes) -> list[tuple[str, int]]:
    stream = io.BytesIO(data)
    load = pickle.Unpickler(stream).load  # one unpickler for all: a restart reads many
    pairs: list[tuple[str, int]] = []
    while stream.tell() < len(data):
        pairs.append(load())
    return pairs


def _restore(sealed: list[tuple[int, int, bytes]], open_ids: bytes | list[tuple[str, int]],
             chunk_ids: int = CHUNK_IDS) -> RememberedIds:
    """Rebuild from a snapshot (chunks as plain tuples: the pickle names no NamedTuple; the
    open chunk as concatenated pickles, or a list in snapshots from before them)."""
    remembered = RememberedIds(chunk=chunk_ids)
    remembered._sealed = [SealedChunk(*chunk) for chunk in sealed]
    if isinstance(open_ids, bytes):
        remembered._open = _unpickle_pairs(open_ids)
        remembered._open_pickled = bytearray(open_ids)
    else:
        remembered._open = list(open_ids)
        remembered._repickle_open()
    every: dict[str, int] = {}
    for chunk in remembered._sealed:
        every.update(chunk.pairs())
    every.update(remembered._open)
    remembered._all = every
    return remembered
