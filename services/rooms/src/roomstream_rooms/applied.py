"""Read-your-write for the API: wait until a room's applied seq reaches the seq of an append.

The projector of this process reports each committed batch (`advance`), which wakes waiters at
once. Another instance may have applied the event instead (consumer groups share the work), so a
waiter also polls the room's last applied seq in Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from . import store


class AppliedSeqs:
    def __init__(self, pool: asyncpg.Pool, *, poll_s: float = 0.25) -> None:
        self.pool = pool
        self.poll_s = poll_s
        self._seqs: dict[str, int] = {}
        self._changed = asyncio.Event()

    def advance(self, seqs: dict[str, int]) -> None:
        """The projector committed these rooms' last applied seqs."""
        for room, seq in seqs.items():
            if seq > self._seqs.get(room, 0):
                self._seqs[room] = seq
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, room: str, seq: int, timeout_s: float) -> bool:
        """True once `room` is applied up to `seq`; False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        next_poll = time.monotonic() + self.poll_s
        while self._seqs.get(room, 0) < seq:
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= next_poll:
                last = await self._applied_in_postgres(room)
                if last >= seq:
                    self.advance({room: last})
                    return True
                next_poll = now + self.poll_s
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(next_poll, deadline) - now)
        return True

    async def _applied_in_postgres(self, room: str) -> int:
        """The room's applied seq in Postgres; 0 while Postgres cannot answer (the wait then
        ends with its timeout, and the API answers `unavailable`)."""
        try:
            async with self.pool.acquire(timeout=self.poll_s * 4) as conn:
                return (await store.last_seqs(conn, [room])).get(room, 0)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return 0
