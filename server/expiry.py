"""Keys ordered by expiry time, for the in-memory maps that must forget expired entries without scanning the
rest: the token registry (``tokens``) and the replay guard of login proofs (``sts``)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")


class ExpiryQueue(Generic[K]):
    """A min-heap of ``(expires_at, key)``. An entry whose key was dropped or renewed meanwhile stays until its
    time comes: the owner checks each popped key against its map, and rebuilds the queue when such stale
    entries pile up."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, K]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, expires_at: float, key: K) -> None:
        heapq.heappush(self._heap, (expires_at, key))

    def expired(self, now: float) -> Iterator[tuple[float, K]]:
        """Pops and yields every entry that expires at or before ``now``, soonest first."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            yield heapq.heappop(heap)

    def rebuild(self, entries: Iterable[tuple[float, K]]) -> None:
        self._heap = list(entries)
        heapq.heapify(self._heap)
