"""Read markers, durable: the `read` events of the users' streams → Postgres, and the Redis cache.

The gateway appends a `read` event (to the user's own stream) when a user's read marker of a room
rises and raises the Redis cache itself (`roomstream_contracts.userstream`). This consumer side
makes the marker durable in `read_markers` and raises the cache again (it repairs a gateway that
died between its append and its cache write, and a cache that lost the key). Max wins
(`GREATEST`, `RAISE_MARKER_SCRIPT`), so order and redelivery do not matter: no seq ordering, no
gap filling, unlike the room projection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

import asyncpg
import orjson
from pydantic import ValidationError
from roomstream_contracts.events import Envelope, EventKind, ReadData
from roomstream_contracts.ids import is_room_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.userstream import RAISE_MARKER_SCRIPT, read_markers_key, stream_user
from roomstream_kit.consumer import BatchHandler, LogEntry
from roomstream_kit.redis import AnyRedis

UPSERT = """
INSERT INTO read_markers (user_id, room, seq, updated_at)
SELECT m->>0, m->>1, (m->>2)::bigint, $2 FROM jsonb_array_elements($1::jsonb) AS m
ON CONFLICT (user_id, room) DO UPDATE
    SET seq = GREATEST(read_markers.seq, EXCLUDED.seq),
        updated_at = CASE WHEN EXCLUDED.seq > read_markers.seq
                          THEN EXCLUDED.updated_at ELSE read_markers.updated_at END
"""


def markers_of(envelopes: Iterable[Envelope]) -> dict[tuple[str, str], int]:
    """(user, room) → highest read seq among the `read` events of a batch (malformed ones, or
    ones not in their own user's stream, are ignored: they can never be applied)."""
    out: dict[tuple[str, str], int] = {}
    for env in envelopes:
        if env.kind != EventKind.READ or not env.room or not env.user:
            continue
        if stream_user(env.room) != env.user:
            continue
        try:
            data = ReadData.model_validate(env.data)
        except ValidationError:
            continue
        if not is_room_id(data.room) or data.seq < 0:
            continue
        key = (env.user, data.room)
        out[key] = max(out.get(key, 0), data.seq)
    return out


class ReadMarkerStore:
    def __init__(self, pool: asyncpg.Pool, redis: AnyRedis, keys: StreamKeys) -> None:
        self.pool = pool
        self.redis = redis
        self.keys = keys

    async def apply(self, envelopes: Iterable[Envelope]) -> int:
        """Store the batch's read markers; returns how many (user, room) markers it had."""
        markers = markers_of(envelopes)
        if not markers:
            return 0
        rows = [[user, room, seq] for (user, room), seq in sorted(markers.items())]
        async with self.pool.acquire() as conn:
            await conn.execute(UPSERT, orjson.dumps(rows).decode(), now_ms())
        await self._raise_all([(user, room, seq) for (user, room), seq in markers.items()])
        return len(markers)

    async def refill(self, chunk: int = 1000) -> int:
        """Raise the Redis cache to every marker Postgres holds (start-up: a Redis that lost the
        cache gets it back; max wins, so a marker the gateways raised since is kept)."""
        done = 0
        async with self.pool.acquire() as conn, conn.transaction():
            cursor = conn.cursor("SELECT user_id, room, seq FROM read_markers")
            rows: list[tuple[str, str, int]] = []
            async for row in cursor:
                rows.append((row["user_id"], row["room"], row["seq"]))
                if len(rows) >= chunk:
                    done += await self._raise_all(rows)
                    rows = []
            done += await self._raise_all(rows)
        return done

    async def _raise_all(self, rows: list[tuple[str, str, int]]) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for user, room, seq in rows:
                pipe.eval(RAISE_MARKER_SCRIPT, 1, read_markers_key(self.keys, user), room, seq)
            await pipe.execute()
        return len(rows)

    def wrap(self, handler: BatchHandler) -> Callable[[Sequence[LogEntry]], Awaitable[None]]:
        """The consumer's batch handler followed by this store (both idempotent: a retried
        batch applies again harmlessly)."""

        async def handle(entries: Sequence[LogEntry]) -> None:
            await handler(entries)
            await self.apply(e.envelope for e in entries)

        return handle
