"""Exactly-once, in-order delivery of each room's sequenced events (pure logic, no I/O).

The gateway may deliver a room's event twice (a live event that also comes in a replay after a
reconnect) or ahead of time (a live event that arrives while the replay of older ones is still on
its way). `Sequencer` remembers the last delivered seq per room and turns the frames it is offered
into the exact sequence `last+1, last+2, …`:

- seq ≤ last: a duplicate, dropped;
- seq = last+1: delivered, followed by any held events that are now contiguous;
- seq > last+1: held until the gap is filled (by the replay of `join(room, since=last)`).

A room that is not tracked yet (a `join` on its way) holds everything until `track` says where
the room starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Room(Generic[T]):
    last: int | None
    held: dict[int, T] = field(default_factory=dict)
    gap_since: float | None = None
    """When (caller's clock) the oldest still-open gap appeared; None without held events."""


class Sequencer(Generic[T]):
    """Per-room sequencing of items of type `T` (the client's event frames)."""

    def __init__(self, max_held_per_room: int = 100_000) -> None:
        self._rooms: dict[str, _Room[T]] = {}
        self.max_held_per_room = max_held_per_room
        self.duplicates = 0
        """Items dropped because their seq had been delivered already."""

    # -- queries --------------------------------------------------------------------------------

    def last(self, room: str) -> int | None:
        """The last delivered seq of `room`, or None when the room is not tracked."""
        r = self._rooms.get(room)
        return r.last if r is not None else None

    def positions(self) -> dict[str, int]:
        """Last delivered seq of every tracked room (what a reconnect resumes from)."""
        return {room: r.last for room, r in self._rooms.items() if r.last is not None}

    def is_tracked(self, room: str) -> bool:
        return self.last(room) is not None

    def held(self, room: str) -> int:
        """How many events of `room` wait for a gap to be filled."""
        r = self._rooms.get(room)
        return len(r.held) if r is not None else 0

    def stalled(self, now: float, after: float) -> list[str]:
        """Tracked rooms whose gap has stayed open for more than `after` (caller's clock)."""
        return [
            room
            for room, r in self._rooms.items()
            if r.last is not None and r.gap_since is not None and now - r.gap_since > after
        ]

    # -- changes --------------------------------------------------------------------------------

    def track(self, room: str, last: int) -> list[T]:
        """Start tracking `room` at `last` unless it is tracked already; returns what is now due."""
        r = self._rooms.setdefault(room, _Room(None))
        if r.last is None:
            r.last = last
        return self._drain(r)

    def reset(self, room: str, last: int) -> list[T]:
        """Tracking of `room` restarts at `last` (an explicit `join(room, since=last)`)."""
        r = self._rooms.setdefault(room, _Room(None))
        r.last = last
        return self._drain(r)

    def skip_to(self, room: str, first_available: int) -> list[T]:
        """Events before `first_available` exist nowhere any more: stop waiting for them."""
        r = self._rooms.setdefault(room, _Room(None))
        r.last = max(r.last or 0, first_available - 1)
        return self._drain(r)

    def forget(self, room: str) -> None:
        """Stop tracking `room` (after `leave`)."""
        self._rooms.pop(room, None)

    def offer(self, room: str, seq: int, item: T, now: float = 0.0) -> list[T]:
        """Offer one sequenced item; returns the items to deliver now, in seq order."""
        r = self._rooms.get(room)
        if r is None:
            r = self._rooms[room] = _Room(None)
        if r.last is not None and seq <= r.last:
            self.duplicates += 1
            return []
        if r.last is not None and seq == r.last + 1:
            r.last = seq
            if not r.held:
                return [item]
            out = [item]
            out.extend(self._drain(r))
            return out
        if seq in r.held:
            self.duplicates += 1
            return []
        if len(r.held) >= self.max_held_per_room:
            # Bounded memory: keep the events nearest the gap; a later replay brings the rest.
            newest = max(r.held)
            if seq > newest:
                return []
            del r.held[newest]
        r.held[seq] = item
        if r.gap_since is None:
            r.gap_since = now
        return []

    def _drain(self, r: _Room[T]) -> list[T]:
        out: list[T] = []
        if r.last is None:
            return out
        for seq in [s for s in r.held if s <= r.last]:
            del r.held[seq]
            self.duplicates += 1
        while r.held:
            item = r.held.pop(r.last + 1, None)
            if item is None:
                break
            r.last += 1
            out.append(item)
        if not r.held:
            r.gap_since = None
        return out
