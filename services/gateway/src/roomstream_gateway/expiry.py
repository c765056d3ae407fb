"""Deadlines of many keys in one heap (pure, no I/O): the gateway's token-expiry schedule.

One heap per gateway instead of a timer or task per socket, so an idle socket costs two heap
entries. Entries are never searched for: `set` gives the key a new generation and pushes its new
deadlines; entries of an older generation are dropped when they surface (lazy deletion), and the
heap is rebuilt when stale entries outnumber live ones (many refreshes of long-lived tokens).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_COMPACT_MIN = 1024
"""Below this heap size stale entries are not worth a rebuild."""


class Deadlines(Generic[K]):
    """(time, what) deadlines per key; `due(now)` pops those that are reached."""

    def __init__(self) -> None:
        # (at, generation, what, key): the generation is unique per `set`, so a tie on `at` is
        # broken before `key` (never compared) is reached.
        self._heap: list[tuple[float, int, str, K]] = []
        self._gen: dict[K, int] = {}
        self._live: dict[K, int] = {}
        """key → deadlines of its current generation still in the heap."""
        self._pending = 0
        """Sum of `_live`: heap entries that still count."""
        self._counter = itertools.count()

    def __len__(self) -> int:
        """Keys with at least one pending deadline."""
        return len(self._live)

    def set(self, key: K, deadlines: Iterable[tuple[float, str]]) -> None:
        """Replace every deadline of `key` with `deadlines` ((at, what) pairs)."""
        self.discard(key)
        gen = next(self._counter)
        self._gen[key] = gen
        n = 0
        for at, what in deadlines:
            heapq.heappush(self._heap, (at, gen, what, key))
            n += 1
        if n:
            self._live[key] = n
            self._pending += n
        else:
            self._gen.pop(key, None)
        self._maybe_compact()

    def discard(self, key: K) -> None:
        """Forget `key` and its deadlines."""
        self._gen.pop(key, None)
        self._pending -= self._live.pop(key, 0)

    def next_at(self) -> float | None:
        """The earliest pending deadline, or None."""
        heap = self._heap
        while heap and self._gen.get(heap[0][3]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[tuple[K, str]]:
        """Pop every deadline at or before `now`, in time order: (key, what)."""
        out: list[tuple[K, str]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, gen, what, key = heapq.heappop(heap)
            if self._gen.get(key) != gen:
                continue
            out.append((key, what))
            left = self._live[key] - 1
            self._pending -= 1
            if left:
                self._live[key] = left
            else:
                del self._live[key]
                del self._gen[key]
        return out

    def _maybe_compact(self) -> None:
        heap = self._heap
        if len(heap) < _COMPACT_MIN or len(heap) < 4 * self._pending:
            return
        self._heap = [e for e in heap if self._gen.get(e[3]) == e[1]]
        heapq.heapify(self._heap)
