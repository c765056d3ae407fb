"""Rooms written straight into the log and the rooms read models, for tests that run gateways or
the history service without the rooms service: exactly what the rooms service would write
(`room_created` as seq 1 through the append script, the room hash, members, user-rooms)."""

from __future__ import annotations

from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import AppendResult, EventLog, RoomCheck
from roomstream_kit.redis import AnyRedis


async def create_room(
    redis: AnyRedis,
    keys: StreamKeys,
    room: str,
    owner: str,
    *,
    kind: str = "public",
    members: list[str] | None = None,
) -> AppendResult:
    """Append `room_created` (seq 1) and write the room's read models; the owner is a member."""
    everyone = sorted({owner, *(members or [])})
    envelope = Envelope(
        id=new_event_id(),
        kind=EventKind.ROOM_CREATED,
        room=room,
        user=owner,
        ts=now_ms(),
        data={"name": room, "kind": kind, "owner": owner, "members": everyone},
    )
    result = await EventLog(redis, keys).append(envelope, room_check=RoomCheck.NEW)
    assert result.ok and result.seq == 1, result
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(
            keys.room(room),
            mapping={
                "id": room,
                "name": room,
                "kind": kind,
                "owner": owner,
                "created_at": str(envelope.ts),
            },
        )
        pipe.sadd(keys.members(room), *everyone)
        for user in everyone:
            pipe.sadd(keys.user_rooms(user), room)
        await pipe.execute()
    return result
