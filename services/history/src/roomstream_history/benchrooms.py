"""Rooms for the benchmarks, made the way the rooms service makes them (room_created + the Redis
read models), so the history benchmarks need no rooms service."""

from __future__ import annotations

from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog, RoomCheck
from roomstream_kit.redis import AnyRedis


async def create_room(redis: AnyRedis, keys: StreamKeys, room: str, members: list[str]) -> None:
    env = Envelope(
        id=new_event_id(),
        kind=EventKind.ROOM_CREATED,
        room=room,
        user=members[0],
        ts=now_ms(),
        data={"name": room, "kind": "public", "owner": members[0], "members": members},
    )
    await EventLog(redis, keys).append(env, room_check=RoomCheck.NEW)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(
            keys.room(room),
            mapping={
                "id": room,
                "name": room,
                "kind": "public",
                "owner": members[0],
                "created_at": env.ts,
            },
        )
        pipe.sadd(keys.members(room), *members)
        for user in members:
            pipe.sadd(keys.user_rooms(user), room)
        await pipe.execute()


def message_envelope(room: str, text: str) -> Envelope:
    return Envelope(
        id=new_event_id(),
        kind=EventKind.MESSAGE,
        room=room,
        user="bench-sender",
        ts=now_ms(),
        data={"text": text, "client_id": new_event_id()},
    )
