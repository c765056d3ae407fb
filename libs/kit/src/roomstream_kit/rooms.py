"""The rooms read models' layout in Redis, and the one function that seeds a room.

The rooms service owns these read models (its projector is their writer); this module is where
their layout is written down once, so that the rooms service and everything that has to make a
room without it (the CLI when no rooms service runs, benchmarks, test helpers) write the same
keys with the same values. Services may not import each other, hence `libs/kit`, next to the
membership authority's reader (`roomstream_kit.eventlog.room_access`).

| key (`StreamKeys`) | type | content |
|---|---|---|
| `room(ROOM)` | hash | `room_record`: id, name, kind, owner, created_at |
| `members(ROOM)` | set | the room's members |
| `presence(ROOM)` | hash | online member → live connections (left by `set_membership`) |
| `user_rooms(USER)` | set | the user's rooms |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from roomstream_contracts.events import Envelope, EventKind, RoomCreatedData
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys

from .eventlog import AppendResult, AppendStatus, EventLog, RoomCheck
from .redis import AnyRedis

Pipeline = Any  # a redis-py (cluster) pipeline; its generics do not help here


def room_created_envelope(
    room: str,
    name: str,
    kind: str,
    owner: str,
    members: Sequence[str] = (),
    trace: dict[str, str] | None = None,
) -> Envelope:
    """`room_created` (seq 1 of its room); the owner is always a member."""
    data = RoomCreatedData(
        name=name, kind=kind, owner=owner, members=list(dict.fromkeys([owner, *members]))
    )
    return Envelope(
        id=new_event_id(),
        kind=EventKind.ROOM_CREATED,
        room=room,
        user=owner,
        ts=now_ms(),
        data=data.model_dump(),
        trace=trace or {},
    )


def room_record(room: str, name: str, kind: str, owner: str, created_at: int) -> dict[str, str]:
    """The room hash (PROTOCOL.md / architecture.md: id, name, kind, owner, created_at)."""
    return {
        "id": room,
        "name": name,
        "kind": kind,
        "owner": owner,
        "created_at": str(created_at),
    }


def put_room(pipe: Pipeline, keys: StreamKeys, record: dict[str, str]) -> None:
    """Write a room hash (`room_record`). Refills write it last: it marks the room complete."""
    mapping: Any = record
    pipe.hset(keys.room(record["id"]), mapping=mapping)


def set_membership(pipe: Pipeline, keys: StreamKeys, room: str, user: str, member: bool) -> None:
    """Add `user` to `room`'s members and the room to the user's rooms, or remove both (and the
    user's presence in the room)."""
    if member:
        pipe.sadd(keys.members(room), user)
        pipe.sadd(keys.user_rooms(user), room)
    else:
        pipe.srem(keys.members(room), user)
        pipe.srem(keys.user_rooms(user), room)
        pipe.hdel(keys.presence(room), user)


async def seed_room(
    redis: AnyRedis,
    keys: StreamKeys,
    room: str,
    owner: str,
    *,
    name: str | None = None,
    kind: str = "public",
    members: Iterable[str] = (),
) -> AppendResult:
    """Make a room without the rooms service, exactly as it would: append `room_created` (seq 1,
    which also seeds the membership authority) and write the room's read models.

    A room that exists already is left as it is (status `room_exists`, nothing written)."""
    envelope = room_created_envelope(room, name or room, kind, owner, list(members))
    result = await EventLog(redis, keys).append(envelope, room_check=RoomCheck.NEW)
    if result.status != AppendStatus.OK:
        return result
    everyone = RoomCreatedData.model_validate(envelope.data).members
    async with redis.pipeline(transaction=False) as pipe:
        for user in everyone:
            set_membership(pipe, keys, room, user, True)
        put_room(pipe, keys, room_record(room, name or room, kind, owner, envelope.ts))
        await pipe.execute()
    return result
