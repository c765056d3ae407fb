"""Readiness of a service that stores in Postgres and consumes the log from Redis (history,
hooks, rooms): one definition of "my dependencies answer" and "my consumer makes progress".

`dependencies_ready` is the consumer's probe (before it dead-letters an entry, `LogConsumer`
checks that the failure is the entry's and not an outage). `ConsumingService` is the base of the
services that keep their wiring in an object (`HistoryService`, `HooksService`): it holds the
Redis client, the pool, the consumer and the `Lifecycle`, and gives them the readiness checks
and `stop()` (in-process runs: tests, benchmarks).
"""

from __future__ import annotations

import asyncpg

from .consumer import LogConsumer
from .lifecycle import Lifecycle
from .postgres import ping
from .redis import AnyRedis


async def dependencies_ready(redis: AnyRedis, pool: asyncpg.Pool) -> None:
    """Redis and Postgres answer (raises otherwise)."""
    await redis.ping()
    await ping(pool)


class ConsumingService:
    """Redis, a Postgres pool opened at start, a log consumer (maybe none) and the lifecycle."""

    redis: AnyRedis
    pool: asyncpg.Pool | None = None
    consumer: LogConsumer | None = None
    life: Lifecycle

    async def stop(self) -> None:
        await self.life.stop()

    async def ready_dependencies(self) -> None:
        """Redis and Postgres answer (the consumer's probe before it dead-letters an entry)."""
        assert self.pool is not None, "started"
        await dependencies_ready(self.redis, self.pool)

    async def consumer_progress(self) -> None:
        """503 while the consumer's current batch has been failing longer than the bound."""
        if self.consumer is not None:
            await self.consumer.consumer_progress()
