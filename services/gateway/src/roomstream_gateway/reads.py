"""Read markers at the gateway: the `read` command, and the `unread` counts of a welcome.

`read {room, seq}` stores the user's last read seq of a room. Max wins: a marker never goes
back, and a `read` at or below the marker appends nothing (its `ack` carries the marker in
force). A new marker is appended to the user's own stream as a `read` event (so every socket of
the user, on every gateway, learns it as a `user` frame, and the rooms service keeps it in
Postgres), then raised in the Redis cache (`userstream.read_markers_key`, `RAISE_MARKER_SCRIPT`).
Should the gateway die between the two, the rooms service raises the cache when it applies the
event.

`unread` of a room (in the welcome's `rooms` entries, only for rooms with a marker): the number
of `message` events with a seq above the marker, up to the welcome's seq, that were not deleted
and were sent by someone else than the user, counted up to `UNREAD_CAP` (the cap means "that
many or more"). It is counted from the room's recent buffer, newest first; when the unread range
reaches past the buffer (more than `ROOMSTREAM_RECENT_PER_ROOM` events, 1000, since the marker)
and fewer than the cap were found, the count covers the buffer only (a lower bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from roomstream_contracts.codec import frame
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.events import Envelope, EventKind, ReadData
from roomstream_contracts.frames import ReadCommand
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.userstream import (
    RAISE_MARKER_SCRIPT,
    UNREAD_SCRIPT,
    read_markers_key,
    user_stream,
)
from roomstream_kit.redis import AnyRedis
from roomstream_kit.redis import text as redis_text
from roomstream_kit.telemetry import inject_context

from .commands import Commands
from .session import Session

UNREAD_CAP = 100
"""The largest `unread` a welcome reports (it means "at least that many")."""
SCAN_CHUNK = 110
"""Events the unread script reads per step, newest first."""


class ReadMarkers:
    """The `read` command (registered with `Commands.register`)."""

    def __init__(self, commands: Commands, redis: AnyRedis, keys: StreamKeys) -> None:
        self.commands = commands
        self.redis = redis
        self.keys = keys
        self._raise = redis.register_script(RAISE_MARKER_SCRIPT)

    async def read(self, session: Session, cmd: ReadCommand) -> None:
        room, seq, ref = cmd.room, cmd.seq, cmd.ref
        # A member of the room (the roster: the membership authority), else not_found/forbidden.
        await self.commands._member(session, room, ref)
        markers = read_markers_key(self.keys, session.user)
        shard = self.keys.room_shard(room)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.seq(shard), room)
            pipe.hget(markers, room)
            current_raw, marker_raw = await pipe.execute()
        current, marker = int(current_raw or 0), int(marker_raw or 0)
        if seq > current:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"seq {seq} is beyond the last seq {current} of {room!r}",
                ref,
            )
        if seq > marker:
            env = Envelope(
                id=new_event_id(),
                kind=EventKind.READ,
                room=user_stream(session.user),
                user=session.user,
                node=self.commands.node,
                conn=session.id,
                ts=now_ms(),
                data=ReadData(room=room, seq=seq).model_dump(),
                trace=inject_context(),
            )
            await self.commands.append(env)
            marker = int(await self._raise(keys=[markers], args=[room, seq]))
        self.commands.reply(session, frame("ack", ref=ref, room=room, seq=marker))


def room_entries(positions: Mapping[str, int], unread: Mapping[str, int]) -> dict[str, Any]:
    """The welcome's `rooms`: `{room: {"seq", "unread"?}}` (`unread` for rooms with a marker)."""
    return {
        room: {"seq": seq} if room not in unread else {"seq": seq, "unread": unread[room]}
        for room, seq in positions.items()
    }


def parse_markers(raw: Mapping[Any, Any]) -> dict[str, int]:
    """The read markers hash (room → seq) as read from Redis; malformed entries are left out."""
    out: dict[str, int] = {}
    for room, seq in raw.items():
        text = redis_text(seq)
        if text.isdigit():
            out[redis_text(room)] = int(text)
    return out


async def unread_counts(
    redis: AnyRedis,
    keys: StreamKeys,
    user: str,
    markers: Mapping[str, int],
    positions: Mapping[str, int],
) -> dict[str, int]:
    """`unread` of every room in `positions` (room → welcome seq) that has a marker: one
    read-only script per room behind its marker (`UNREAD_SCRIPT`), all in one pipeline; only
    the counts leave Redis."""
    out = {r: 0 for r, m in markers.items() if r in positions and m >= positions[r]}
    behind = [
        (r, m, positions[r]) for r, m in markers.items() if r in positions and m < positions[r]
    ]
    if not behind:
        return out
    own = orjson.dumps({"user": user})[1:-1] + b","
    async with redis.pipeline(transaction=False) as pipe:
        for room, marker, current in behind:
            pipe.eval(
                UNREAD_SCRIPT,
                2,
                keys.recent(room),
                keys.deleted(room),
                marker,
                current,
                UNREAD_CAP,
                own,
                SCAN_CHUNK,
            )
        counts = await pipe.execute()
    for (room, _, _), count in zip(behind, counts, strict=True):
        out[room] = int(count)
    return out
