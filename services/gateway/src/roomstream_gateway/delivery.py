"""The delivery core, sans I/O: per socket, which rooms it receives and which frames to write.

Fed live log entries, membership changes, the outcome of a `welcome` / `join` and replay
results, it answers which frames each socket must get, in order. It never reads or writes a
socket or Redis (the models: websockets' `protocol.py` — data in, "what to send" out — and
centrifuge's `internal/recovery` — buffer live publications during a recovery, merge them with
the recovered ones, report what is missing). `hub` does the writes, `commands` / `app` the reads.

Guarantees, per socket and room (`Sub`):

- each seq is written at most once: `pos` is the highest seq the socket was written or was told
  it is at (welcome / joined seq); a live event with seq <= `pos` is dropped (the tail may lag
  behind the seq a welcome or join read from Redis);
- while a reply is pending (welcome, join) the room's live frames are *held*; the reply comes
  first, then the missed events (the replay), then the held frames above them;
- the socket received every event in (`base`, `pos`]: a `join` with `since` replays only
  (since, base], never what the socket already had;
- a failed join keeps the subscription, its `base` and the held live frames (written after the
  error): a retried join converges;
- a replay that does not reach the held live frames (or has a hole) is not written with a gap:
  `finish_join` answers `Need(after, until)` and the caller fetches that range and retries;
- a membership change applies at its seq: `grant` (member_joined, room_created, ...) subscribes
  at seq-1, a `member_left` at L ends a subscription granted before L, after its frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from roomstream_contracts.codec import client_frame_of, frame
from roomstream_contracts.events import DELIVERED_KINDS, EventKind
from roomstream_contracts.streams import FIELD_EVENT, FIELD_KIND, FIELD_ROOM
from websockets.frames import Frame, Opcode

Wire = tuple[bytes, bytes]
"""(JSON payload, serialized WebSocket text frame) of one server frame."""

_DELIVERED = frozenset(k.value.encode() for k in DELIVERED_KINDS)
_JOINED = EventKind.MEMBER_JOINED.value.encode()
_LEFT = EventKind.MEMBER_LEFT.value.encode()
_CREATED = EventKind.ROOM_CREATED.value.encode()

Held = tuple[int | None, Wire]


def wire(payload: bytes) -> Wire:
    """A frame's payload and its unmasked WebSocket frame bytes (no extensions): server frames
    are unmasked, so the bytes are the same for every recipient."""
    return payload, Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


class Sub:
    """One socket's subscription to one room."""

    __slots__ = ("base", "held", "left", "member_at", "peer", "pos")

    def __init__(self, peer: Peer, pos: int, member_at: int = 0, hold: bool = False) -> None:
        self.peer = peer
        self.pos = pos
        """Highest seq written or positioned at; live seqs <= pos are dropped."""
        self.base = pos
        """The socket got every event in (base, pos]."""
        self.member_at = member_at
        """Seq of the grant that started it (0: unknown); a member_left at or below is stale."""
        self.held: list[Held] | None = [] if hold else None
        self.left = 0
        """Seq of a member_left of this user seen while held (decided when the hold ends)."""


class Peer:
    """One socket as the core sees it; `owner` is the caller's object (the session)."""

    __slots__ = ("gone", "join", "owner", "subs", "user", "welcoming")

    def __init__(self, owner: Any, user: str) -> None:
        self.owner = owner
        self.user = user
        self.subs: dict[str, Sub] = {}
        self.welcoming = False
        self.join: Join | None = None
        self.gone: dict[str, int] | None = None
        """room → last seq of a subscription that ended: a grant at or below it is stale (the
        tail delivering a member_joined after the socket left again)."""


@dataclass(slots=True)
class Join:
    """A join in progress (one per socket: commands are handled one at a time)."""

    room: str
    since: int | None
    fresh: bool
    """The socket did not receive the room before this join."""
    mark: int
    """For an existing subscription: its pos when the join began (frames up to it are written)."""
    current: int = 0
    replay: dict[int, Wire] | None = None
    replay_left: int = 0
    """Seq of this user's own member_left found in the replay (0: none)."""


@dataclass(frozen=True, slots=True)
class Need:
    """The replay lacks events after..until (inclusive): fetch them, then `finish_join` again."""

    after: int
    until: int


@dataclass(frozen=True, slots=True)
class Done:
    frames: list[Wire]
    """`joined`, the missed events, then the held live frames."""
    subscribed: bool
    """False when the membership ended during the join (a member_left of this user)."""


RECENT_GRANTS = 10_000
"""How many membership grants the core remembers for sockets that are still connecting."""


class Core:
    """Subscriptions of every local socket and the merge of replay and live frames."""

    def __init__(self, recent_grants: int = RECENT_GRANTS) -> None:
        self.rooms: dict[str, dict[Peer, Sub]] = {}
        self.users: dict[str, set[Peer]] = {}
        self.delivered = 0
        """Events delivered to at least one socket."""
        self.recent: dict[str, dict[str, int]] = {}
        """user → room → seq of the latest grants the tail delivered, for every user (with a
        local socket or not): a socket that registers after a grant went by, while the rooms
        projection has not yet put the room into the user's read model, still gets the room at
        its welcome (`recent_rooms`)."""
        self._grant_order: deque[tuple[str, str, int]] = deque()
        self._recent_grants = recent_grants
        self.opened: list[str] = []
        """Rooms that got their first local subscriber, and `emptied`: lost their last one —
        in order, for the router (`routing`) to subscribe to / leave the rooms' channels."""
        self.emptied: list[str] = []

    # -- sockets and subscriptions ------------------------------------------------------------

    def add(self, owner: Any, user: str, welcoming: bool = False) -> Peer:
        """Register a socket; `welcoming`: its welcome is pending, so grants from now on are held
        for it until `finish_welcome` (the welcome is a socket's first frame)."""
        peer = Peer(owner, user)
        peer.welcoming = welcoming
        self.users.setdefault(user, set()).add(peer)
        return peer

    def remove(self, peer: Peer) -> None:
        for room in list(peer.subs):
            self.unsubscribe(peer, room)
        peers = self.users.get(peer.user)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self.users[peer.user]

    def subscribed(self, peer: Peer, room: str) -> bool:
        return room in peer.subs

    def _subscribe(self, peer: Peer, room: str, sub: Sub) -> Sub:
        if peer.gone is not None:
            peer.gone.pop(room, None)
        peer.subs[room] = sub
        subs = self.rooms.get(room)
        if subs is None:
            subs = self.rooms[room] = {}
            self.opened.append(room)
        subs[peer] = sub
        return sub

    def unsubscribe(self, peer: Peer, room: str, at: int = 0) -> None:
        """End a subscription now (`leave` appended at seq `at`, a member_left, the socket
        closing)."""
        sub = peer.subs.pop(room, None)
        if sub is None:
            return
        if peer.gone is None:
            peer.gone = {}
        peer.gone[room] = max(sub.pos, at, peer.gone.get(room, 0))
        subs = self.rooms.get(room)
        if subs is not None:
            subs.pop(peer, None)
            if not subs:
                del self.rooms[room]
                self.emptied.append(room)

    def grant(self, room: str, users: Iterable[str], seq: int) -> None:
        """Membership granted at `seq` (member_joined, room_created, ...): the users' sockets
        receive the room from `seq` on (held while their welcome is pending)."""
        for user in users:
            self._remember_grant(user, room, seq)
            for peer in self.users.get(user, ()):
                sub = peer.subs.get(room)
                if sub is None:
                    gone = peer.gone
                    if gone is not None and seq <= gone.get(room, 0):
                        continue
                    self._subscribe(peer, room, Sub(peer, seq - 1, seq, hold=peer.welcoming))
                elif seq > sub.member_at:
                    sub.member_at = seq

    def _remember_grant(self, user: str, room: str, seq: int) -> None:
        rooms = self.recent.setdefault(user, {})
        if seq <= rooms.get(room, 0):
            return
        rooms[room] = seq
        order = self._grant_order
        order.append((user, room, seq))
        while len(order) > self._recent_grants:
            old_user, old_room, old_seq = order.popleft()
            old = self.recent.get(old_user)
            if old is not None and old.get(old_room) == old_seq:
                del old[old_room]
                if not old:
                    del self.recent[old_user]

    def recent_rooms(self, user: str) -> list[str]:
        """Rooms recently granted to `user` (and not left since): candidates for a welcome, next
        to the read model's; the welcome still checks each against the roster."""
        return list(self.recent.get(user, ()))

    def _left(self, room: str, user: str, seq: int) -> None:
        """A member_left of `user` at `seq`: end the subscriptions granted before it."""
        rooms = self.recent.get(user)
        if rooms is not None and rooms.get(room, 0) < seq:
            rooms.pop(room, None)
            if not rooms:
                del self.recent[user]
        for peer in list(self.users.get(user, ())):
            sub = peer.subs.get(room)
            if sub is None or seq <= sub.member_at:
                continue
            if sub.held is not None:
                sub.left = max(sub.left, seq)  # decided when the hold ends
            else:
                self.unsubscribe(peer, room, seq)

    # -- live delivery (the hot path) ---------------------------------------------------------

    def deliver(
        self, entries: Iterable[dict[bytes, bytes]], decode_errors: list[BaseException]
    ) -> tuple[dict[Peer, list[Wire]], int, int, list[int]]:
        """A tail batch of log entries (field dicts), in stream order.

        Returns (frames per socket in order, events delivered, frames, event timestamps).
        Each frame's bytes are built once per event, whatever the number of recipients. An
        entry that cannot be decoded is skipped (its error appended to `decode_errors`)."""
        out: dict[Peer, list[Wire]] = {}
        events = 0
        frames = 0
        stamps: list[int] = []
        rooms = self.rooms
        for fields in entries:
            kind = fields.get(FIELD_KIND)
            if kind not in _DELIVERED:
                continue
            room_b = fields.get(FIELD_ROOM)
            if not room_b:
                continue
            try:
                room = room_b.decode()
                envelope = None
                if kind == _JOINED:
                    envelope = orjson.loads(fields[FIELD_EVENT])
                    user = envelope.get("user")
                    if user:
                        self.grant(room, (user,), envelope.get("seq") or 1)
                elif kind == _CREATED:  # a room created through the rooms API: its owner and
                    envelope = orjson.loads(fields[FIELD_EVENT])  # members receive it at once
                    self.grant(room, created_members(envelope), envelope.get("seq") or 1)
                subs = rooms.get(room)
                if not subs:
                    continue
                if envelope is None:
                    envelope = orjson.loads(fields[FIELD_EVENT])
                payload = client_frame_of(envelope)
            except Exception as exc:  # one malformed entry must not cost the rest of the batch
                decode_errors.append(exc)
                continue
            if payload is None:
                continue
            w = wire(payload)
            seq = envelope.get("seq")
            for sub in subs.values():
                if seq is not None:
                    if seq <= sub.pos:
                        continue  # the socket has it (replayed, or behind its welcome / joined)
                    sub.pos = seq
                held = sub.held
                if held is not None:
                    held.append((seq, w))
                    continue
                q = out.get(sub.peer)
                if q is None:
                    out[sub.peer] = [w]
                else:
                    q.append(w)
                frames += 1
            events += 1
            stamps.append(envelope.get("ts") or 0)
            if kind == _LEFT and envelope.get("user") and seq is not None:
                self._left(room, envelope["user"], seq)
        self.delivered += events
        return out, events, frames, stamps

    # -- welcome ------------------------------------------------------------------------------

    def begin_welcome(self, peer: Peer, rooms: Iterable[str]) -> None:
        """Subscribe the socket to its rooms, held until `finish_welcome` (rooms granted
        meanwhile are held too: the welcome is the socket's first frame)."""
        peer.welcoming = True
        for room in rooms:
            if room not in peer.subs:
                self._subscribe(peer, room, Sub(peer, -1, hold=True))

    def finish_welcome(
        self, peer: Peer, positions: dict[str, int]
    ) -> tuple[dict[str, int], list[Wire]]:
        """The rooms' seqs read after subscribing: (positions of the rooms still received, the
        live frames that follow the welcome, above those seqs)."""
        peer.welcoming = False
        kept: dict[str, int] = {}
        frames: list[Wire] = []
        for room, sub in list(peer.subs.items()):
            held = sub.held
            if held is None:
                continue
            sub.held = None
            if room in positions:
                sub.pos = sub.base = positions[room]
            else:  # granted during the welcome: from its grant on
                sub.pos = sub.base
            end = sub.left if sub.left > sub.member_at else None
            for seq, w in held:
                if seq is not None:
                    if seq <= sub.pos or (end is not None and seq > end):
                        continue
                    sub.pos = seq
                frames.append(w)
            if end is not None:
                self.unsubscribe(peer, room)
            elif room in positions:
                kept[room] = positions[room]
        return kept, frames

    # -- join ---------------------------------------------------------------------------------

    def begin_join(self, peer: Peer, room: str, since: int | None) -> None:
        """Subscribe (if not yet) and hold the room's live frames until the join finishes."""
        sub = peer.subs.get(room)
        if sub is None:
            self._subscribe(peer, room, Sub(peer, -1, hold=True))
            peer.join = Join(room, since, True, -1)
        else:
            sub.held = []
            peer.join = Join(room, since, False, sub.pos)

    def granted(self, peer: Peer, seq: int) -> None:
        """The join appended this user's member_joined at `seq` (a member_left before it is
        stale)."""
        join = peer.join
        if join is not None:
            sub = peer.subs.get(join.room)
            if sub is not None and seq > sub.member_at:
                sub.member_at = seq

    def replay_range(self, peer: Peer, current: int) -> tuple[int, int] | None:
        """Given the room's current seq: which events the socket misses, (after, until], or
        None when nothing is to be replayed."""
        join = peer.join
        assert join is not None
        join.current = current
        if join.since is None:
            return None
        sub = peer.subs.get(join.room)
        upto = current if join.fresh or sub is None else min(current, sub.base)
        return (join.since, upto) if join.since < upto else None

    def finish_join(
        self,
        peer: Peer,
        ref: str | None,
        events: Iterable[dict[str, Any]],
        first_available: int | None = None,
    ) -> Need | Done:
        """Merge the replay (`events`: event bodies, any order, may overlap) with the held live
        frames. `first_available`: events before it no longer exist anywhere (retention)."""
        join = peer.join
        assert join is not None
        sub = peer.subs.get(join.room)
        if sub is None:  # ended meanwhile (the socket closing): nothing more to say
            peer.join = None
            return Done([], False)
        replay = join.replay if join.replay is not None else {}
        join.replay = replay
        for ev in events:
            seq = ev.get("seq")
            if not isinstance(seq, int) or seq in replay:
                continue
            payload = client_frame_of(ev)
            if payload is None:
                continue
            replay[seq] = wire(payload)
            if (
                ev.get("kind") == EventKind.MEMBER_LEFT
                and ev.get("user") == peer.user
                and seq > sub.member_at
                and (join.replay_left == 0 or seq < join.replay_left)
            ):
                join.replay_left = seq
        held = sub.held or []
        rng = self.replay_range(peer, join.current)
        since = join.since
        recovered = True
        out: list[Wire] = []
        last = join.current if join.fresh else join.mark
        if since is not None:
            last = max(last, since)
        # Where the membership ends (a member_left of this user after its grant), if it does.
        ends = [s for s in (sub.left, join.replay_left) if s > sub.member_at]
        end = min(ends) if ends else None
        walk_start: int | None = None
        if rng is not None:
            after, until = rng
            if end is not None:
                until = min(until, end)
            start = after
            if first_available is not None and first_available > after + 1:
                recovered = False
                start = min(first_available, until + 1) - 1
            walk_start = start
            held_seqs = {s: w for s, w in held if s is not None} if join.fresh else {}
            for seq in range(start + 1, until + 1):
                w = replay.get(seq) or held_seqs.get(seq)
                if w is None:
                    nxt = [s for s in replay if seq < s <= until]
                    return Need(seq - 1, min(nxt) - 1 if nxt else until)
                out.append(w)
            if join.fresh:
                last = max(last, until)
        missed = len(out)
        # The held live frames above what the socket has, in arrival (= seq) order.
        for seq, w in held:
            if seq is not None:
                if seq <= last or (end is not None and seq > end):
                    continue
                if seq > last + 1 and last >= 0 and join.fresh:
                    # Live frames above a hole (e.g. a replay that stopped short): fill it.
                    hole_end = seq - 1
                    if all(s in replay for s in range(last + 1, hole_end + 1)):
                        out.extend(replay[s] for s in range(last + 1, hole_end + 1))
                    else:
                        return Need(last, hole_end)
                last = seq
            out.append(w)
        joined = frame(
            "joined",
            ref=ref,
            room=join.room,
            seq=join.current,
            recovered=recovered,
            missed=missed,
            first_available=first_available if not recovered else None,
        )
        out.insert(0, wire(joined))
        sub.held = None
        sub.left = 0
        if join.fresh:
            sub.pos = last
            sub.base = walk_start if walk_start is not None else last
        else:
            sub.pos = max(last, sub.pos)
            if walk_start is not None:
                sub.base = walk_start
        peer.join = None
        if end is not None:
            self.unsubscribe(peer, join.room)
            return Done(out, False)
        return Done(out, True)

    def abort_join(self, peer: Peer) -> list[Wire]:
        """The join failed: a socket that received the room before keeps receiving it, with its
        base and the live frames held meanwhile (returned, to be written after the error); a new
        subscription ends."""
        join = peer.join
        peer.join = None
        if join is None:
            return []
        sub = peer.subs.get(join.room)
        if sub is None:
            return []
        if join.fresh:
            self.unsubscribe(peer, join.room)
            return []
        held, sub.held = sub.held or [], None
        end = sub.left if sub.left > sub.member_at else None
        sub.left = 0
        frames = [w for seq, w in held if end is None or seq is None or seq <= end]
        if end is not None:
            self.unsubscribe(peer, join.room)
        return frames


def created_members(envelope: dict[str, Any]) -> list[str]:
    """Owner and members of a `room_created` envelope, each once: like `member_joined` for each
    of them, the room reaches their open sockets from this event on."""
    data = envelope.get("data")
    if not isinstance(data, dict):
        return []
    members = data.get("members")
    users = [data.get("owner"), *(members if isinstance(members, list) else [])]
    return [u for u in dict.fromkeys(users) if isinstance(u, str) and u]
