"""Creating public rooms for `up` and `bench`: through the rooms API, or straight into the log.

The rooms API is the normal way. When the rooms service is not running (not built yet, or left
out), `create_room_direct` appends `room_created` through the kit's `EventLog` (seq 1 of the room)
and writes the room record read model that gateways read, which is what the rooms service's
projection would have written.
"""

from __future__ import annotations

import httpx
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import AppendStatus, EventLog, RoomCheck
from roomstream_kit.redis import AnyRedis

from .common import service_token


class RoomsApiUnavailable(Exception):
    """The rooms API did not answer."""


async def create_room_api(rooms_url: str, room: str, name: str, secret: str | None = None) -> bool:
    """POST /rooms; True when created now, False when it existed (409)."""
    headers = {"Authorization": f"Bearer {service_token(secret)}"}
    body = {"id": room, "name": name, "kind": "public"}
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            r = await http.post(f"{rooms_url.rstrip('/')}/rooms", json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise RoomsApiUnavailable(str(exc)) from exc
    if r.status_code == 409:
        return False
    if r.status_code >= 500:
        raise RoomsApiUnavailable(f"{r.status_code} {r.text[:200]}")
    r.raise_for_status()
    return True


async def create_room_direct(
    redis: AnyRedis, keys: StreamKeys, room: str, name: str, owner: str = "roomstream-cli"
) -> bool:
    """Append `room_created` and write the room record; True when created now."""
    envelope = Envelope(
        id=new_event_id(),
        kind=EventKind.ROOM_CREATED,
        room=room,
        user=owner,
        ts=now_ms(),
        data={"name": name, "kind": "public", "owner": owner, "members": []},
    )
    result = await EventLog(redis, keys).append(envelope, room_check=RoomCheck.NEW)
    if result.status == AppendStatus.ROOM_EXISTS:
        return False
    await redis.hset(
        keys.room(room),
        mapping={
            "id": room,
            "name": name,
            "kind": "public",
            "owner": owner,
            "created_at": str(envelope.ts),
        },
    )
    return True
