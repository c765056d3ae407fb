"""The projection's pure logic: which events to apply, and what each one changes.

No I/O here. `store` turns these changes into SQL, `readmodels` into Redis writes; `projector`
orchestrates both inside one transaction per batch.

Ordering rules (docs/rooms.md, "Projection"):
- a room's sequenced events are applied strictly in seq order: seq <= last applied is skipped
  (idempotency), a seq beyond last+1 is a *gap* (an earlier event is still pending with another
  consumer) that must be filled before anything later is applied;
- a seq the consumer dead-lettered (`room_skipped_seqs`) counts as present and is applied
  without effect, so a room never waits on an event that can never be applied;
- connection events are idempotent by connection id; a closed connection stays closed;
- incarnations: every node id's process lives are numbered (`incarnation`, growing). An event of
  incarnation I of a node (`node_started`, `connected`, `disconnected`) means every older one is
  dead; `node_failed` of I means I is dead too. So each node has a *retired* mark (the highest
  incarnation known dead) that only grows, and a connection of an incarnation at or below it is
  closed — at once when the mark rises, or as soon as it is recorded when its event comes late
  (another shard, a reclaimed entry). A new incarnation's own connections are never retired,
  whatever order the shards deliver in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from roomstream_contracts.events import (
    ConnectedData,
    Envelope,
    EventKind,
    MemberJoinedData,
    NodeFailedData,
    NodeStartedData,
    PresenceData,
    RoomCreatedData,
)
from roomstream_contracts.ids import new_event_id, now_ms

ROOM_KINDS = frozenset({EventKind.ROOM_CREATED, EventKind.MEMBER_JOINED, EventKind.MEMBER_LEFT})
"""Sequenced kinds that change the room projection (the others only advance its seq)."""
CONNECTION_KINDS = frozenset(
    {EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.NODE_FAILED, EventKind.NODE_STARTED}
)
"""Kinds that change presence."""


# -- sequencing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomPlan:
    """What to do with one room's sequenced events of a batch."""

    apply: list[Envelope]
    """Events to apply now, consecutive seqs starting at last applied + 1."""
    gap: tuple[int, int] | None = None
    """Inclusive seq range missing before the first pending event (fill it, then plan again)."""
    through: int | None = None
    """The last seq this plan covers, applied or skipped (None: nothing)."""

    @property
    def last_seq(self) -> int | None:
        return self.through


def plan_room(
    last_applied: int, events: Iterable[Envelope], skipped: Collection[int] = ()
) -> RoomPlan:
    """Order, deduplicate and cut a room's events against its last applied seq; `skipped` seqs
    (dead-lettered) count as present and are never applied, even when an event has them."""
    by_seq: dict[int, Envelope] = {}
    for env in events:
        if env.seq is not None and env.seq > last_applied:
            by_seq.setdefault(env.seq, env)
    if not by_seq:
        return RoomPlan([])
    skip = {s for s in skipped if s > last_applied}
    first = min([*by_seq, *skip])
    if first > last_applied + 1:
        return RoomPlan([], (last_applied + 1, first - 1))
    apply: list[Envelope] = []
    nxt = last_applied + 1
    while nxt in by_seq or nxt in skip:
        if nxt not in skip:
            apply.append(by_seq[nxt])
        nxt += 1
    through = nxt - 1 if nxt - 1 > last_applied else None
    # Anything beyond a hole inside the batch waits: the hole is filled on the retry.
    later = [s for s in by_seq if s > nxt]
    gap = (nxt, min(later) - 1) if later else None
    return RoomPlan(apply, gap, through)


# -- room changes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateRoom:
    room: str
    name: str
    kind: str
    owner: str
    created_at: int
    members: tuple[str, ...]
    seq: int


@dataclass(frozen=True, slots=True)
class AddMember:
    room: str
    user: str
    seq: int


@dataclass(frozen=True, slots=True)
class RemoveMember:
    room: str
    user: str
    seq: int


RoomChange = CreateRoom | AddMember | RemoveMember


def room_change(env: Envelope) -> RoomChange | None:
    """The state change of one sequenced event (None: it only advances the room's seq)."""
    assert env.room is not None and env.seq is not None
    if env.kind == EventKind.ROOM_CREATED:
        data = RoomCreatedData.model_validate(env.data)
        members = tuple(dict.fromkeys([data.owner, *data.members]))
        return CreateRoom(env.room, data.name, data.kind, data.owner, env.ts, members, env.seq)
    if env.kind == EventKind.MEMBER_JOINED and env.user:
        return AddMember(env.room, env.user, env.seq)
    if env.kind == EventKind.MEMBER_LEFT and env.user:
        return RemoveMember(env.room, env.user, env.seq)
    return None


def members_touched(change: RoomChange) -> list[tuple[str, str]]:
    """(room, user) pairs whose membership this change may alter."""
    if isinstance(change, CreateRoom):
        return [(change.room, m) for m in change.members]
    return [(change.room, change.user)]


# -- connection changes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenConn:
    conn: str
    user: str
    node: str
    ts: int
    incarnation: int | None = None


@dataclass(frozen=True, slots=True)
class CloseConn:
    conn: str
    user: str
    node: str
    ts: int
    incarnation: int | None = None


@dataclass(frozen=True, slots=True)
class FailNode:
    """Incarnation `incarnation` of `node` is dead: close its connections and older ones. Without
    an incarnation (older versions): close every connection of `node` opened no later than `ts`."""

    node: str
    ts: int
    incarnation: int | None = None


@dataclass(frozen=True, slots=True)
class StartNode:
    """Incarnation `incarnation` of `node` started: every older incarnation is dead."""

    node: str
    ts: int
    incarnation: int


ConnChange = OpenConn | CloseConn | FailNode | StartNode


def retire_mark(change: ConnChange) -> tuple[str, int] | None:
    """(node, highest incarnation this change proves dead), or None (no incarnation known)."""
    if isinstance(change, FailNode):
        return None if change.incarnation is None else (change.node, change.incarnation)
    if change.incarnation is None:
        return None
    return change.node, change.incarnation - 1


def conn_change(env: Envelope) -> ConnChange | None:
    """The presence change of a connection event (None: malformed, ignored)."""
    try:
        if env.kind == EventKind.NODE_FAILED:
            failed = NodeFailedData.model_validate(env.data)
            return FailNode(failed.node, env.ts, failed.incarnation)
        if env.kind == EventKind.NODE_STARTED:
            started = NodeStartedData.model_validate(env.data)
            return StartNode(started.node, env.ts, started.incarnation)
        # connected / disconnected: both data models carry `incarnation` alike
        incarnation = ConnectedData.model_validate(env.data).incarnation
    except ValueError:
        return None
    if not (env.conn and env.user and env.node):
        return None
    if env.kind == EventKind.CONNECTED:
        return OpenConn(env.conn, env.user, env.node, env.ts, incarnation)
    if env.kind == EventKind.DISCONNECTED:
        return CloseConn(env.conn, env.user, env.node, env.ts, incarnation)
    return None


# -- presence transitions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresenceNotice:
    """An `online` / `offline` event to append for `room`."""

    kind: EventKind
    room: str
    user: str
    connections: int


@dataclass(slots=True)
class PresenceInput:
    """What the transition rule needs, read from the store around one batch."""

    before: dict[str, int] = field(default_factory=dict)
    """Live connections per affected user before the batch."""
    after: dict[str, int] = field(default_factory=dict)
    """... and after it."""
    rooms_after: dict[str, list[str]] = field(default_factory=dict)
    """Rooms of each affected user after the batch."""
    joined: list[tuple[str, str]] = field(default_factory=list)
    """(room, user) memberships created by the batch."""


def presence_notices(p: PresenceInput) -> list[PresenceNotice]:
    """`online` in every room when a user's first connection appears, `offline` when the last one
    goes; `online` in a room a user joined while already online (its members learn it is here)."""
    out: list[PresenceNotice] = []
    came: set[str] = set()
    for user in sorted(set(p.before) | set(p.after)):
        b, a = p.before.get(user, 0), p.after.get(user, 0)
        if b == 0 and a > 0:
            came.add(user)
            out += [
                PresenceNotice(EventKind.ONLINE, r, user, a) for r in p.rooms_after.get(user, [])
            ]
        elif b > 0 and a == 0:
            out += [
                PresenceNotice(EventKind.OFFLINE, r, user, 0) for r in p.rooms_after.get(user, [])
            ]
    for room, user in p.joined:
        if user not in came and p.after.get(user, 0) > 0:
            out.append(PresenceNotice(EventKind.ONLINE, room, user, p.after[user]))
    return out


def notice_envelope(notice: PresenceNotice, trace: dict[str, str]) -> Envelope:
    """The log event of a presence notice (no seq: presence is not room history)."""
    return Envelope(
        id=new_event_id(),
        kind=notice.kind,
        room=notice.room,
        user=notice.user,
        ts=now_ms(),
        data=PresenceData(connections=notice.connections).model_dump(),
        trace=trace,
    )


# -- API-side event construction -------------------------------------------------------------


def membership_envelope(
    kind: EventKind, room: str, user: str, by: str, trace: dict[str, str]
) -> Envelope:
    """`member_joined` / `member_left` of `user`, caused by `by`."""
    return Envelope(
        id=new_event_id(),
        kind=kind,
        room=room,
        user=user,
        ts=now_ms(),
        data=MemberJoinedData(by=by).model_dump(),
        trace=trace,
    )
