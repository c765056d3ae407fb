"""Presence coalescing: a user who comes back within the grace period makes no `offline`/`online`
pair (pure logic, no I/O; the projector feeds it notices and the clock).

Why: after a deploy or a gateway crash every user reconnects at once; without a grace each of
them produces an `offline` and an `online` in every one of its rooms, delivered to every member:
users × rooms × members frames for nothing. With the grace, an `offline` notice is held for
`grace_s`; an `online` for the same user and room in that time cancels both. Held `offline`s
whose time has come are handed back (`due`) for the projector to check against the live
connection count (another rooms instance may have seen the user come back) and append.

State changes wait for the batch to be durable: `plan` decides without touching the held state,
`commit` applies the decision once the batch's transaction committed (a batch that fails and is
delivered again meets the same held `offline`s: an `online` that cancelled one on the first try
cancels it again instead of being appended). A flush whose appends fail part-way re-`hold`s only
the notices not appended (`by_user` of them): those appended are never appended twice.

The read models (`presence` hashes) are not delayed: they always show the live connections;
only the events are coalesced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from roomstream_contracts.events import EventKind

from .projection import PresenceNotice


@dataclass(slots=True)
class _Held:
    deadline: float
    rooms: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class GraceStep:
    """What `plan` decided for one batch: the notices to append now, and the held state of every
    user the batch mentions once the batch is applied (None: nothing held), for `commit`."""

    append: list[PresenceNotice]
    held: dict[str, _Held | None] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        """Whether the step leaves an `offline` held (the flushing task has a deadline to wait)."""
        return any(h is not None for h in self.held.values())


def by_user(notices: Iterable[PresenceNotice]) -> dict[str, list[str]]:
    """The rooms of `notices` per user (the shape `due` hands out and `hold` takes back)."""
    out: dict[str, list[str]] = {}
    for n in notices:
        out.setdefault(n.user, []).append(n.room)
    return out


class PresenceGrace:
    """Holds `offline` notices for `grace_s` seconds; `grace_s <= 0` passes everything through."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._held: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def plan(self, notices: list[PresenceNotice], now: float) -> GraceStep:
        """Decide, without changing the held state, which notices to append now: `offline`s are
        held, an `online` cancels a held `offline` of the same user and room (neither is
        appended). `commit` the step once the batch is durable; a failed batch drops it."""
        if self.grace_s <= 0:
            return GraceStep(list(notices))
        touched: dict[str, _Held | None] = {}
        out: list[PresenceNotice] = []
        for n in notices:
            if n.user not in touched:
                held = self._held.get(n.user)  # a copy: the held state is `commit`'s to change
                touched[n.user] = held if held is None else _Held(held.deadline, set(held.rooms))
            held = touched[n.user]
            if n.kind is EventKind.OFFLINE:
                if held is None:
                    held = touched[n.user] = _Held(now + self.grace_s)
                held.deadline = now + self.grace_s
                held.rooms.add(n.room)
            elif n.kind is EventKind.ONLINE and held is not None and n.room in held.rooms:
                held.rooms.discard(n.room)
                if not held.rooms:
                    touched[n.user] = None
            else:
                out.append(n)
        return GraceStep(out, touched)

    def commit(self, step: GraceStep) -> None:
        """Apply a `plan` step (its batch is durable). Steps are planned and committed one at a
        time (the projector's lock), so a step always starts from the state it was planned on."""
        for user, held in step.held.items():
            if held is None:
                self._held.pop(user, None)
            else:
                self._held[user] = held

    def filter(self, notices: list[PresenceNotice], now: float) -> list[PresenceNotice]:
        """`plan` and `commit` at once: the notices to append now."""
        step = self.plan(notices, now)
        self.commit(step)
        return step.append

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
        """Hold `offline` notices (user → rooms) again until `deadline` (their append failed;
        only the ones not appended: `by_user` of them)."""
        for user, rooms in offline.items():
            held = self._held.setdefault(user, _Held(deadline))
            held.deadline = min(held.deadline, deadline)
            held.rooms.update(rooms)
