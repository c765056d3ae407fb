"""Readiness of a service that stores in Postgres and consumes the log from Redis (history,
hooks, rooms): one definition of "my dependencies answer" and "my consumer makes progress".

`dependencies_ready` is the consumer's probe (before it dead-letters an entry, `LogConsumer`
checks that the failure is the entry's and not an outage). `ConsumingService` is the base of the
services that keep their wiring in an object (`HistoryService`, `HooksService`): it holds the
Redis client, the pool, the consumer and the `Lifecycle`, and gives them the opening of the
stores (`open_stores`), the readiness checks and `stop()` (in-process runs: tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from opentelemetry.metrics import Counter
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from .consumer import LogConsumer
from .lifecycle import Lifecycle
from .postgres import open_on, ping
from .redis import AnyRedis, on_lifecycle
from .service import service_app
from .telemetry import flush_spans


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

    async def start(self, life: Lifecycle | None = None) -> dict[str, Any]:
        """Open the dependencies and start the tasks on `life`; returns the lifespan state."""
        raise NotImplementedError

    def asgi_app(
        self,
        service: str,
        routes: Sequence[BaseRoute],
        *,
        errors: Counter | None = None,
        lifecycle: Callable[[], Lifecycle] | None = None,
    ) -> Starlette:
        """The service's app (`service_app`) with `start` as its lifespan; `app.state.service` is
        this object (tests and benchmarks reach the running service through it)."""
        app = service_app(
            service, routes=routes, start=self.start, errors=errors, lifecycle=lifecycle
        )
        app.state.service = self
        return app

    async def open_stores(
        self,
        life: Lifecycle | None,
        database_url: str,
        service: str,
        migrations: str,
        pool_size: int,
    ) -> tuple[Lifecycle, asyncpg.Pool]:
        """The first steps of `start(life)`: adopt `life` (default: the service's own), flush the
        spans at the very end of a stop, close Redis on stop, open the pool and run `migrations`."""
        life = self.life = life or self.life
        life.on_stop("flush spans", flush_spans, 2.0)  # registered first: runs last
        on_lifecycle(life, self.redis)
        pool = self.pool = await open_on(
            life, database_url, service, migrations, max_size=pool_size
        )
        return life, pool

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
