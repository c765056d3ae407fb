"""Presence coalescing: a user who comes back within the grace period makes no `offline`/`online`
pair (pure logic, no I/O; the projector feeds it notices and the clock).

Why: after a deploy or a gateway crash every user reconnects at once; without a grace each of
them produces an `offline` and an `online` in every one of its rooms, delivered to every member:
users × rooms × members frames for nothing. With the grace, an `offline` notice is held for
`grace_s`; an `online` for the same user and room in that time cancels both. Held `offline`s
whose time has come are handed back (`due`) for the projector to check against the live
connection count (another rooms instance may have seen the user come back) and append.

The read models (`presence` hashes) are not delayed: they always show the live connections;
only the events are coalesced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roomstream_contracts.events import EventKind

from .projection import PresenceNotice


@dataclass(slots=True)
class _Held:
    deadline: float
    rooms: set[str] = field(default_factory=set)


class PresenceGrace:
    """Holds `offline` notices for `grace_s` seconds; `grace_s <= 0` passes everything through."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._held: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def filter(self, notices: list[PresenceNotice], now: float) -> list[PresenceNotice]:
        """The notices to append now: `offline`s are held, an `online` cancels a held `offline`
        of the same user and room (neither is appended)."""
        if self.grace_s <= 0:
            return notices
        out: list[PresenceNotice] = []
        for n in notices:
            held = self._held.get(n.user)
            if n.kind is EventKind.OFFLINE:
                if held is None:
                    held = self._held[n.user] = _Held(now + self.grace_s)
                held.deadline = now + self.grace_s
                held.rooms.add(n.room)
            elif n.kind is EventKind.ONLINE and held is not None and n.room in held.rooms:
                held.rooms.discard(n.room)
                if not held.rooms:
                    del self._held[n.user]
            else:
                out.append(n)
        return out

    def next_deadline(self) -> float | None:
        """When the earliest held `offline` is due, or None."""
        return min((h.deadline for h in self._held.values()), default=None)

    def due(self, now: float) -> dict[str, list[str]]:
        """Remove and return the held `offline`s whose grace is over: user → rooms."""
        ready = {u: sorted(h.rooms) for u, h in self._held.items() if h.deadline <= now}
        for user in ready:
            del self._held[user]
        return ready

    def hold(self, offline: dict[str, list[str]], deadline: float) -> None:
        """Hold `offline` notices (user → rooms) again until `deadline` (their append failed)."""
        for user, rooms in offline.items():
            held = self._held.setdefault(user, _Held(deadline))
            held.deadline = min(held.deadline, deadline)
            held.rooms.update(rooms)
