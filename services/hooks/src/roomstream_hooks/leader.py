"""One consuming instance at a time: the holder of a Postgres advisory lock reads the log.

Per-room order in the outbox needs a room's entries to be enqueued in log order. With several
consumers in the group, two batches of one shard could be handled by two instances at once and
commit in the wrong order; so only the leader consumes, under one fixed consumer name
(`CONSUMER`). A new leader therefore first drains the pending entries its predecessor read but
did not acknowledge (`LogConsumer.start` drains its own consumer's pending entries), in order,
before it reads new ones. The lock is a session lock: it goes when the holder's connection does
(a crash, a network cut), and the holder checks its connection every `CHECK_S` and stops
consuming when it fails. Every instance delivers, whoever leads (endpoint leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

CONSUMER = "hooks"
"""The consumer name of whichever instance leads (so a new leader inherits the pending entries)."""
CHECK_S = 1.0


def lock_key(namespace: str) -> int:
    """The advisory lock of one deployment (several may share a database)."""
    return zlib.crc32(f"roomstream-hooks-consumer:{namespace}".encode())


class Leadership:
    def __init__(
        self,
        dsn: str,
        namespace: str,
        on_lead: Callable[[], Awaitable[None]],
        on_lose: Callable[[], Awaitable[None]],
        check_s: float = CHECK_S,
    ) -> None:
        self.dsn = dsn
        self.key = lock_key(namespace)
        self.on_lead = on_lead
        self.on_lose = on_lose
        self.check_s = check_s
        self.leading = False

    async def run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5)
                while True:
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                        break
                    await asyncio.sleep(self.check_s)
                log.info("leading: this instance consumes the log")
                self.leading = True
                await self.on_lead()
                try:
                    while True:
                        await asyncio.sleep(self.check_s)
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), self.check_s * 3)
                finally:
                    self.leading = False
                    await self.on_lose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer leadership lost or unavailable: %s", exc)
                await asyncio.sleep(self.check_s)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
