"""Room → local subscribers, and the delivery hot path.

Each delivered event is encoded once (client frame JSON, then the WebSocket frame bytes: server
frames are unmasked, so the bytes are the same for every recipient) and all frames of one tail
batch are written to each socket with a single `transport.write`. Only OPEN connections without
negotiated extensions take that path; others go through websockets' own `broadcast()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import orjson
from roomstream_contracts.codec import client_frame_of
from roomstream_contracts.events import DELIVERED_KINDS, EventKind
from roomstream_contracts.streams import FIELD_EVENT, FIELD_KIND, FIELD_ROOM
from websockets.asyncio.server import broadcast
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from .session import Session

log = logging.getLogger(__name__)

_DELIVERED = frozenset(k.value.encode() for k in DELIVERED_KINDS)
_JOINED = EventKind.MEMBER_JOINED.value.encode()
_LEFT = EventKind.MEMBER_LEFT.value.encode()
_CREATED = EventKind.ROOM_CREATED.value.encode()

Wire = tuple[bytes, bytes]
"""(JSON payload, serialized WebSocket text frame) of one server frame."""


def wire(payload: bytes) -> Wire:
    """A frame's payload and its unmasked WebSocket frame bytes (no extensions)."""
    return payload, Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


class Hub:
    """Which local sockets receive which room, and writing frames to them."""

    def __init__(self, max_buffer_bytes: int, on_slow: Callable[[Session], None]) -> None:
        self.rooms: dict[str, set[Session]] = {}
        self.users: dict[str, set[Session]] = {}
        self.max_buffer_bytes = max_buffer_bytes
        self.on_slow = on_slow
        self.delivered = 0
        """Events delivered to at least one socket (for the heartbeat's messages_per_s)."""

    # -- membership of the hub ---------------------------------------------------------------

    def add(self, session: Session) -> None:
        self.users.setdefault(session.user, set()).add(session)

    def remove(self, session: Session) -> None:
        for room in list(session.rooms):
            self.unsubscribe(session, room)
        peers = self.users.get(session.user)
        if peers is not None:
            peers.discard(session)
            if not peers:
                del self.users[session.user]

    def subscribe(self, session: Session, room: str, base: int = 0) -> None:
        session.rooms[room] = base
        self.rooms.setdefault(room, set()).add(session)

    def unsubscribe(self, session: Session, room: str) -> None:
        session.rooms.pop(room, None)
        subs = self.rooms.get(room)
        if subs is not None:
            subs.discard(session)
            if not subs:
                del self.rooms[room]
        session.release(room)

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self.users.values())

    # -- writing -------------------------------------------------------------------------------

    def write(self, session: Session, frames: Sequence[Wire]) -> None:
        """Write frames to one socket now, in order (no await: ordering with other writes holds)."""
        if session.closing or not frames:
            return
        conn = session.conn
        protocol = conn.protocol
        if protocol.state is not OPEN:
            return
        if not protocol.extensions and conn.send_in_progress is None:
            transport = conn.transport
            if len(frames) == 1:
                transport.write(frames[0][1])
            else:
                transport.write(b"".join([f[1] for f in frames]))
        else:
            for payload, _ in frames:
                broadcast((conn,), payload, text=True)
        if conn.transport.get_write_buffer_size() > self.max_buffer_bytes:
            session.closing = True
            self.on_slow(session)

    def send(self, session: Session, payload: bytes) -> None:
        """Write one reply frame (ack, error, joined, ...)."""
        self.write(session, (wire(payload),))

    # -- delivery of a tail batch -------------------------------------------------------------

    def deliver(self, entries: Iterable[dict[bytes, bytes]]) -> tuple[int, int, list[int]]:
        """Deliver a batch of log entries (field dicts) in order.

        Returns (events delivered, frames written, event timestamps) for the metrics.
        """
        out: dict[Session, list[Wire]] = {}
        left: list[tuple[str, str]] = []
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
                    self._member_joined(room, envelope.get("user"), envelope.get("seq") or 1)
                elif kind == _CREATED:
                    envelope = orjson.loads(fields[FIELD_EVENT])
                    for user in _created_members(envelope):
                        self._member_joined(room, user, envelope.get("seq") or 1)
                subs = rooms.get(room)
                if not subs:
                    continue
                if envelope is None:
                    envelope = orjson.loads(fields[FIELD_EVENT])
                payload = client_frame_of(envelope)
            except Exception:  # one malformed entry must not cost the rest of the batch
                log.exception("hub: skipped an entry that could not be decoded")
                continue
            if payload is None:
                continue
            w = wire(payload)
            seq = envelope.get("seq")
            for s in subs:
                held = s.held
                if held is not None and room in held:
                    held[room].append((seq, payload))
                    continue
                q = out.get(s)
                if q is None:
                    out[s] = [w]
                else:
                    q.append(w)
                frames += 1
            events += 1
            stamps.append(envelope.get("ts") or 0)
            if kind == _LEFT and envelope.get("user"):
                left.append((room, envelope["user"]))
        for s, q in out.items():
            self.write(s, q)
        for room, user in left:
            for s in list(self.users.get(user, ())):
                self.unsubscribe(s, room)
        self.delivered += events
        return events, frames, stamps

    def _member_joined(self, room: str, user: str | None, seq: int) -> None:
        """A member was added: the user's local sockets start receiving the room (from this
        event on)."""
        for s in self.users.get(user or "", ()):
            if room not in s.rooms and not s.closing:
                if s.held is not None:  # a welcome / join reply is pending: keep the order
                    s.hold(room)
                self.subscribe(s, room, seq - 1)


def _created_members(envelope: dict[str, object]) -> list[str]:
    """Owner and members of a `room_created` envelope: like `member_joined` for each of them, the
    room reaches their open sockets from this event on (a room created through the rooms API)."""
    data = envelope.get("data")
    if not isinstance(data, dict):
        return []
    members = data.get("members")
    users = [data.get("owner"), *(members if isinstance(members, list) else [])]
    return [u for u in dict.fromkeys(users) if isinstance(u, str) and u]
