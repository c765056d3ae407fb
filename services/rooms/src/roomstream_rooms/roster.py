"""Seeding the membership authority (the append script's roster) of rooms that predate it.

The roster of a room is written by the append script itself, in the same step as every
`room_created` / `member_joined` / `member_left` (docs/architecture.md, "Where membership
authority lives"). A room created before that has none; the script answers `unseeded` for it.
This module seeds it from this service's projection: a snapshot of the room's members taken at its
applied seq S, under the projection lock, plus the membership events after S that the seed script
reads from the room's recent buffer in the same atomic step. A snapshot too old for the buffer is
`stale` and tried again once the projection has caught up.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from roomstream_kit.eventlog import EventLog

from . import store

log = logging.getLogger(__name__)


async def seed_room(pool: asyncpg.Pool, eventlog: EventLog, room: str) -> str:
    """Seed one room's roster: 'ok', 'seeded' (it was), 'no_room' or 'stale'."""
    async with pool.acquire() as conn, conn.transaction():
        await store.lock_projection(conn)  # members and last_seq of one applied state
        row = await store.get_room(conn, room)
        if row is None:
            return "no_room"
        members = await store.members(conn, room)
        return await eventlog.seed_roster(room, row.kind, row.last_seq, members)


async def seed_all(
    pool: asyncpg.Pool, eventlog: EventLog, *, attempts: int = 20, pause_s: float = 0.5
) -> dict[str, int]:
    """Seed every room of the projection that has no roster yet (start-up migration).

    A `stale` room (its recent buffer has moved past the projection) is tried again, up to
    `attempts` rounds; what is left is seeded on demand (`GET /rooms/{room}`)."""
    async with pool.acquire() as conn:
        pending = await store.all_room_ids(conn)
    counts = {"rooms": len(pending), "seeded": 0, "stale": 0}
    for attempt in range(attempts):
        stale: list[str] = []
        for room in pending:
            answer = await seed_room(pool, eventlog, room)
            if answer == "ok":
                counts["seeded"] += 1
            elif answer == "stale":
                stale.append(room)
        pending = stale
        if not pending:
            break
        if attempt + 1 < attempts:
            await asyncio.sleep(pause_s)
    counts["stale"] = len(pending)
    if counts["seeded"] or pending:
        log.info(
            "membership rosters seeded for %d rooms (%d still stale)",
            counts["seeded"],
            len(pending),
        )
    return counts
