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
from roomstream_contracts.codec import entry_envelope, frame
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.events import Envelope, EventKind, ReadData
from roomstream_contracts.frames import ReadCommand
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.userstream import RAISE_MARKER_SCRIPT, read_markers_key, user_stream
from roomstream_kit.redis import AnyRedis
from roomstream_kit.redis import text as redis_text
from roomstream_kit.telemetry import inject_context

from .commands import Commands
from .session import Session

UNREAD_CAP = 100
"""The largest `unread` a welcome reports (it means "at least that many")."""
SCAN_CHUNK = 200
"""Events read per step while counting a room's unread messages, newest first."""


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


def count_unread(entries: list[Any], marker: int, user: str) -> tuple[list[int], int, bool]:
    """From recent-buffer entries newest first: (seqs above `marker` of messages by others,
    the lowest seq seen, whether the marker was reached)."""
    seqs: list[int] = []
    lowest = -1
    for entry_id, fields in entries:
        seq = int(redis_text(entry_id).split("-", 1)[0])
        lowest = seq
        if seq <= marker:
            return seqs, lowest, True
        env = orjson.loads(entry_envelope(fields))
        if env.get("kind") == EventKind.MESSAGE and env.get("user") != user:
            seqs.append(seq)
    return seqs, lowest, False


async def unread_counts(
    redis: AnyRedis,
    keys: StreamKeys,
    user: str,
    markers: Mapping[str, int],
    positions: Mapping[str, int],
) -> dict[str, int]:
    """`unread` of every room in `positions` (room → welcome seq) that has a marker: the first
    chunk of every room in one pipeline, further chunks (rare: a long unread range of mostly
    other events) one by one, then the deleted check in one pipeline."""
    out = {r: 0 for r, m in markers.items() if r in positions and m >= positions[r]}
    behind = [
        (r, m, positions[r]) for r, m in markers.items() if r in positions and m < positions[r]
    ]
    if not behind:
        return out
    async with redis.pipeline(transaction=False) as pipe:
        for room, marker, current in behind:
            pipe.xrevrange(keys.recent(room), f"{current}-0", f"{marker + 1}-0", count=SCAN_CHUNK)
        firsts = await pipe.execute()
    found: dict[str, list[int]] = {}
    entries: Any
    for (room, marker, _), entries in zip(behind, firsts, strict=True):
        seqs, lowest, reached = count_unread(entries, marker, user)
        while not reached and len(entries) == SCAN_CHUNK and len(seqs) < UNREAD_CAP:
            entries = await redis.xrevrange(
                keys.recent(room), f"{lowest - 1}-0", f"{marker + 1}-0", count=SCAN_CHUNK
            )
            more, lowest, reached = count_unread(entries, marker, user)
            seqs.extend(more)
        found[room] = seqs
    counted = [room for room, seqs in found.items() if seqs]
    if counted:
        async with redis.pipeline(transaction=False) as pipe:
            for room in counted:
                pipe.smismember(keys.deleted(room), found[room])
            gone = await pipe.execute()
        for room, flags in zip(counted, gone, strict=True):
            found[room] = [s for s, deleted in zip(found[room], flags, strict=True) if not deleted]
    for room, seqs in found.items():
        out[room] = min(len(seqs), UNREAD_CAP)
    return out
