"""Postgres access of the webhooks service: endpoints, the outbox, dead letters, leases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    secret: str
    kinds: tuple[str, ...]
    rooms: tuple[str, ...] | None
    source: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxRow:
    pos: int
    event_id: str
    body: str
    attempts: int
    enqueued_at: datetime


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One log event, ready for the outbox (the SQL join picks the endpoints)."""

    event_id: str
    kind: str
    room: str | None
    body: str


def _endpoint(r: asyncpg.Record) -> Endpoint:
    rooms = r["rooms"]
    return Endpoint(
        id=r["id"],
        url=r["url"],
        secret=r["secret"],
        kinds=tuple(r["kinds"]),
        rooms=tuple(rooms) if rooms is not None else None,
        source=r["source"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


_ENDPOINT_COLUMNS = "id, url, secret, kinds, rooms, source, created_at, updated_at"

_ENQUEUE = """
INSERT INTO hooks_outbox (endpoint_id, event_id, room, body)
SELECT e.id, ev.event_id, ev.room, ev.body
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
     WITH ORDINALITY AS ev (event_id, kind, room, body, ord)
JOIN hooks_endpoints e
  ON ev.kind = ANY (e.kinds) AND (e.rooms IS NULL OR ev.room = ANY (e.rooms))
ORDER BY ev.ord, e.id
ON CONFLICT DO NOTHING
RETURNING endpoint_id
"""
# `ORDER BY ev.ord`: `pos` (the serial) follows the log order of the batch, so an endpoint's rows
# of one room are in the room's order. ON CONFLICT: a log entry delivered again (a crash before
# its XACK) is not queued twice while it waits.


class HooksStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- endpoints -------------------------------------------------------------------------

    async def endpoints(self) -> list[Endpoint]:
        rows = await self.pool.fetch(f"SELECT {_ENDPOINT_COLUMNS} FROM hooks_endpoints ORDER BY id")
        return [_endpoint(r) for r in rows]

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        r = await self.pool.fetchrow(
            f"SELECT {_ENDPOINT_COLUMNS} FROM hooks_endpoints WHERE id = $1", endpoint_id
        )
        return _endpoint(r) if r is not None else None

    async def create_endpoint(
        self,
        endpoint_id: str,
        url: str,
        secret: str,
        kinds: Sequence[str],
        rooms: Sequence[str] | None,
        source: str = "api",
    ) -> Endpoint | None:
        """The new endpoint, or None if the id is taken."""
        r = await self.pool.fetchrow(
            f"""INSERT INTO hooks_endpoints (id, url, secret, kinds, rooms, source)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING
                RETURNING {_ENDPOINT_COLUMNS}""",
            endpoint_id,
            url,
            secret,
            list(kinds),
            list(rooms) if rooms is not None else None,
            source,
        )
        return _endpoint(r) if r is not None else None

    async def upsert_endpoint(
        self,
        endpoint_id: str,
        url: str,
        secret: str,
        kinds: Sequence[str],
        rooms: Sequence[str] | None,
        source: str,
    ) -> Endpoint:
        r = await self.pool.fetchrow(
            f"""INSERT INTO hooks_endpoints (id, url, secret, kinds, rooms, source)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (id) DO UPDATE SET url = $2, secret = $3, kinds = $4, rooms = $5,
                    source = $6, updated_at = now()
                RETURNING {_ENDPOINT_COLUMNS}""",
            endpoint_id,
            url,
            secret,
            list(kinds),
            list(rooms) if rooms is not None else None,
            source,
        )
        assert r is not None
        return _endpoint(r)

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        status = await self.pool.execute("DELETE FROM hooks_endpoints WHERE id = $1", endpoint_id)
        return bool(status.endswith(" 1"))

    # -- the outbox ------------------------------------------------------------------------

    async def enqueue(self, events: Sequence[QueuedEvent]) -> dict[str, int]:
        """Queue `events` (in log order) for every endpoint that subscribes to them, in one
        statement; → rows queued per endpoint."""
        rows = await self.pool.fetch(
            _ENQUEUE,
            [e.event_id for e in events],
            [e.kind for e in events],
            [e.room for e in events],
            [e.body for e in events],
        )
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["endpoint_id"]] = counts.get(r["endpoint_id"], 0) + 1
        return counts

    async def head(self, endpoint_id: str, limit: int) -> list[OutboxRow]:
        rows = await self.pool.fetch(
            """SELECT pos, event_id, body, attempts, enqueued_at FROM hooks_outbox
               WHERE endpoint_id = $1 ORDER BY pos LIMIT $2""",
            endpoint_id,
            limit,
        )
        return [
            OutboxRow(r["pos"], r["event_id"], r["body"], r["attempts"], r["enqueued_at"])
            for r in rows
        ]

    async def delivered(self, endpoint_id: str, positions: Sequence[int]) -> None:
        await self.pool.execute(
            "DELETE FROM hooks_outbox WHERE endpoint_id = $1 AND pos = ANY ($2::bigint[])",
            endpoint_id,
            list(positions),
        )

    async def failed(self, endpoint_id: str, positions: Sequence[int], error: str) -> None:
        await self.pool.execute(
            """UPDATE hooks_outbox SET attempts = attempts + 1, last_error = $3
               WHERE endpoint_id = $1 AND pos = ANY ($2::bigint[])""",
            endpoint_id,
            list(positions),
            error,
        )

    async def dead_letter(
        self,
        endpoint_id: str,
        positions: Sequence[int],
        older_than_s: float,
        keep: int | None = None,
    ) -> tuple[int, int]:
        """Move the rows at `positions`, and every row of the endpoint enqueued more than
        `older_than_s` ago, to the dead-letter list (one transaction), then drop the oldest dead
        letters beyond the newest `keep`; → (rows moved, dead letters dropped)."""
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """WITH moved AS (
                       DELETE FROM hooks_outbox
                       WHERE endpoint_id = $1 AND (pos = ANY ($2::bigint[])
                             OR enqueued_at < now() - make_interval(secs => $3))
                       RETURNING endpoint_id, pos, event_id, room, body, enqueued_at, attempts,
                                 last_error)
                   INSERT INTO hooks_dead_letters
                       (endpoint_id, pos, event_id, room, body, enqueued_at, attempts, last_error)
                   SELECT * FROM moved ON CONFLICT DO NOTHING""",
                endpoint_id,
                list(positions),
                older_than_s,
            )
            dropped = "DELETE 0"
            if keep is not None:
                dropped = await conn.execute(
                    """DELETE FROM hooks_dead_letters
                       WHERE endpoint_id = $1 AND pos <= (
                           SELECT pos FROM hooks_dead_letters WHERE endpoint_id = $1
                           ORDER BY pos DESC OFFSET $2 LIMIT 1)""",
                    endpoint_id,
                    keep,
                )
        return int(status.rsplit(" ", 1)[-1]), int(dropped.rsplit(" ", 1)[-1])

    async def backlog(self) -> tuple[dict[str, int], dict[str, int]]:
        """(outbox rows, dead letters) per endpoint."""
        async with self.pool.acquire() as conn:
            out = await conn.fetch(
                "SELECT endpoint_id, count(*) AS n FROM hooks_outbox GROUP BY endpoint_id"
            )
            dead = await conn.fetch(
                "SELECT endpoint_id, count(*) AS n FROM hooks_dead_letters GROUP BY endpoint_id"
            )
        return {r["endpoint_id"]: r["n"] for r in out}, {r["endpoint_id"]: r["n"] for r in dead}

    # -- dead letters ----------------------------------------------------------------------

    async def dead_letters(self, endpoint_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT pos, event_id, room, body, enqueued_at, attempts, last_error, dead_at
               FROM hooks_dead_letters WHERE endpoint_id = $1 AND pos > $2
               ORDER BY pos LIMIT $3""",
            endpoint_id,
            after,
            limit,
        )
        return [dict(r) for r in rows]

    async def replay(self, endpoint_id: str, event_ids: Sequence[str] | None) -> int:
        """Move dead letters (all, or those of `event_ids`) back to the end of the outbox, in
        their order, with fresh attempts; → events replayed."""
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """WITH moved AS (
                       DELETE FROM hooks_dead_letters
                       WHERE endpoint_id = $1 AND ($2::text[] IS NULL OR event_id = ANY ($2))
                       RETURNING pos, event_id, room, body)
                   INSERT INTO hooks_outbox (endpoint_id, event_id, room, body)
                   SELECT $1, event_id, room, body FROM moved ORDER BY pos
                   ON CONFLICT DO NOTHING""",
                endpoint_id,
                list(event_ids) if event_ids is not None else None,
            )
        return int(status.rsplit(" ", 1)[-1])

    # -- leases ----------------------------------------------------------------------------

    async def take_lease(self, endpoint_id: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the endpoint's lease; False while another live owner holds it."""
        r = await self.pool.fetchval(
            """INSERT INTO hooks_leases (endpoint_id, owner, until)
               VALUES ($1, $2, now() + make_interval(secs => $3))
               ON CONFLICT (endpoint_id) DO UPDATE
                   SET owner = $2, until = now() + make_interval(secs => $3)
                   WHERE hooks_leases.owner = $2 OR hooks_leases.until < now()
               RETURNING owner""",
            endpoint_id,
            owner,
            ttl_s,
        )
        return bool(r == owner)

    async def release_lease(self, endpoint_id: str, owner: str) -> None:
        await self.pool.execute(
            "DELETE FROM hooks_leases WHERE endpoint_id = $1 AND owner = $2", endpoint_id, owner
        )
