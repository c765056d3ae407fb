"""`python -m roomstream_rooms rebuild`: rebuild the Postgres and Redis projections from the log.

Empties the projection tables and deletes every read-model key of the namespace, then replays
every shard from its first entry (XRANGE from 0) through the same projector the service runs, in
rebuild mode: nothing is appended to the log (no `online` / `offline` events). Run it with the
rooms service stopped (docs/rooms.md, "Rebuild").
"""

from __future__ import annotations

import logging
import time
from typing import Any

from roomstream_kit.consumer import decode_entries
from roomstream_kit.postgres import create_pool, ensure_database, migrate
from roomstream_kit.redis import connect, text

from . import store
from .app import MIGRATIONS
from .metrics import RoomsMetrics
from .projector import Projector
from .readmodels import ReadModels
from .settings import RoomsSettings

log = logging.getLogger(__name__)


async def rebuild(settings: RoomsSettings, *, chunk: int = 1000) -> dict[str, Any]:
    """Rebuild both projections; returns counts for the report."""
    started = time.perf_counter()
    await ensure_database(settings.database_url)
    pool = await create_pool(settings.database_url)
    redis = connect(settings)
    try:
        await migrate(pool, "rooms", MIGRATIONS)
        read_models = ReadModels(redis, settings.keys)
        projector = Projector(pool, redis, read_models, RoomsMetrics(), eventlog=None)
        async with pool.acquire() as conn, conn.transaction():
            await store.lock_projection(conn)
            await store.truncate(conn)
        deleted = await read_models.delete_all()
        await projector.load_skipped()  # dead-lettered events stay skipped (docs/rooms.md)
        entries = 0
        for stream in settings.keys.all_logs():
            start = "-"
            while True:
                raw: Any = await redis.xrange(stream, min=start, max="+", count=chunk)
                if not raw:
                    break
                batch = decode_entries(stream, raw)
                await projector.apply_envelopes(e.envelope for e in batch)
                entries += len(raw)
                last = raw[-1][0]
                start = "(" + (text(last))
        async with pool.acquire() as conn:
            snap = await store.snapshot(conn)
        return {
            "entries": entries,
            "rooms": len(snap["rooms"]),
            "memberships": len(snap["memberships"]),
            "live_connections": sum(1 for c in snap["connections"] if c[3]),
            "read_model_keys_deleted": deleted,
            "seconds": round(time.perf_counter() - started, 3),
        }
    finally:
        await redis.aclose()
        await pool.close()
