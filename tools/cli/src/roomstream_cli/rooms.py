"""Creating public rooms for `up` and `bench`: through the rooms API, or straight into the log.

The rooms API is the normal way. When the rooms service is not running (not built yet, or left
out), `create_room_direct` seeds the room with the kit's one room-seeding function
(`roomstream_kit.rooms.seed_room`: `room_created` as seq 1, then the read models the rooms
service's projection would have written).
"""

from __future__ import annotations

import httpx
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import AppendStatus
from roomstream_kit.redis import AnyRedis
from roomstream_kit.rooms import seed_room

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
    """`roomstream_kit.rooms.seed_room` of a public room; True when created now."""
    result = await seed_room(redis, keys, room, owner, name=name)
    return result.status == AppendStatus.OK
