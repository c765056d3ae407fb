"""Rooms for the benchmarks, made by the one room-seeding function (room_created + the Redis read
models, as the rooms service makes them), so the history benchmarks need no rooms service."""

from __future__ import annotations

from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.redis import AnyRedis
from roomstream_kit.rooms import seed_room


async def create_room(redis: AnyRedis, keys: StreamKeys, room: str, members: list[str]) -> None:
    """A public room owned by its first member (`roomstream_kit.rooms.seed_room`)."""
    await seed_room(redis, keys, room, members[0], members=members)


def message_envelope(room: str, text: str) -> Envelope:
    return Envelope(
        id=new_event_id(),
        kind=EventKind.MESSAGE,
        room=room,
        user="bench-sender",
        ts=now_ms(),
        data={"text": text, "client_id": new_event_id()},
    )
