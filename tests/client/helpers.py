"""Helpers for the client tests: rooms written straight into the log and the rooms read models
(what the rooms service would write), and polling with a generous deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog, RoomCheck

DEADLINE_S = 60.0


async def make_room(
    redis: aioredis.Redis, namespace: str, room: str, owner: str, members: list[str]
) -> None:
    """Append `room_created` (seq 1) and write room hash (public), members and user-rooms."""
    keys = StreamKeys(namespace=namespace)
    everyone = sorted({owner, *members})
    envelope = Envelope(
        id=new_event_id(),
        kind=EventKind.ROOM_CREATED,
        room=room,
        user=owner,
        ts=now_ms(),
        data={"name": room, "kind": "public", "owner": owner, "members": everyone},
    )
    result = await EventLog(redis, keys).append(envelope, room_check=RoomCheck.NEW)
    assert result.ok and result.seq == 1, result
    await redis.hset(
        keys.room(room),
        mapping={
            "id": room,
            "name": room,
            "kind": "public",
            "owner": owner,
            "created_at": str(envelope.ts),
        },
    )
    for user in everyone:
        await redis.sadd(keys.members(room), user)
        await redis.sadd(keys.user_rooms(user), room)


async def wait_until(
    condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Poll `condition` until it holds; fail with `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)
