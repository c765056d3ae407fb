"""Rooms for tests that run gateways or the history service without the rooms service: made by
the one room-seeding function (`roomstream_kit.rooms.seed_room`), which writes exactly what the
rooms service would (`room_created` as seq 1 through the append script, then the read models)."""

from __future__ import annotations

from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import AppendResult
from roomstream_kit.redis import AnyRedis
from roomstream_kit.rooms import seed_room


async def create_room(
    redis: AnyRedis,
    keys: StreamKeys,
    room: str,
    owner: str,
    *,
    kind: str = "public",
    members: list[str] | None = None,
) -> AppendResult:
    """`seed_room`, and fail the test unless the room was created now (seq 1)."""
    result = await seed_room(redis, keys, room, owner, kind=kind, members=members or [])
    assert result.ok and result.seq == 1, result
    return result
