"""Wiring of the webhooks service: Postgres, the consumer (log → outbox), the delivery workers
(outbox → endpoints), the API. `HooksService` can also run in-process: `start()` / `stop()`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from opentelemetry import trace
from roomstream_kit.consumer import LogConsumer
from roomstream_kit.http import exception_handlers, health_routes
from roomstream_kit.node import Heartbeat
from roomstream_kit.postgres import create_pool, ensure_database, migrate
from roomstream_kit.redis import AnyRedis, connect
from roomstream_kit.shutdown import cancel_and_wait
from starlette.applications import Starlette

from .api import HooksApi
from .delivery import Dispatcher
from .enqueue import Enqueuer
from .leader import CONSUMER, Leadership
from .metrics import HooksMetrics
from .model import parse_env_endpoints
from .settings import HooksSettings
from .store import HooksStore, ping

log = logging.getLogger(__name__)

GROUP = "hooks"


async def open_database(settings: HooksSettings) -> asyncpg.Pool:
    """Pool with migrations applied; waits (with backoff) while Postgres is unreachable."""
    delay = 0.2
    while True:
        try:
            await ensure_database(settings.database_url)
            pool = await create_pool(settings.database_url, max_size=settings.pg_pool_size)
            await migrate(pool, "hooks", "roomstream_hooks.migrations")
            return pool
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            log.warning("postgres unavailable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class HooksService:
    def __init__(self, settings: HooksSettings) -> None:
        self.settings = settings
        self.node = settings.node_name("hooks")
        self.env_endpoints = parse_env_endpoints(settings.hooks_endpoints)  # fail fast
        self.metrics = HooksMetrics()
        self.redis: AnyRedis = connect(settings)
        self.pool: asyncpg.Pool | None = None
        self.consumer: LogConsumer | None = None
        self._consumer_task: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.heartbeat = Heartbeat(
            self.redis,
            settings.keys,
            self.node,
            "hooks",
            interval_s=settings.heartbeat_interval_s,
            ttl_s=settings.heartbeat_ttl_s,
            address=f"http://{settings.advertised_host()}:{settings.port}",  # monitor scrapes
        )

    async def start(self) -> None:
        s = self.settings
        self.pool = await open_database(s)
        self.store = HooksStore(self.pool)
        for spec in self.env_endpoints:
            assert spec.id is not None and spec.secret is not None
            await self.store.upsert_endpoint(
                spec.id, spec.url, spec.secret, spec.kinds, spec.rooms, "env"
            )
        self.dispatcher = Dispatcher(self.store, s, self.metrics, self.node)
        self.api = HooksApi(s, self.store, self.dispatcher, self.metrics)
        self.enqueuer = Enqueuer(self.store, self.metrics, self.dispatcher.wake)
        self.heartbeat.start()
        self.leadership = Leadership(s.database_url, s.namespace, self._lead, self._unlead)
        self.tasks.append(asyncio.create_task(self.dispatcher.run(), name="hooks-dispatcher"))
        self.tasks.append(asyncio.create_task(self.leadership.run(), name="hooks-leadership"))
        self.tasks.append(asyncio.create_task(self._gauges(), name="hooks-gauges"))
        log.info("hooks service %s started", self.node)

    async def _lead(self) -> None:
        """This instance leads: consume the log (see `leader`)."""
        s = self.settings
        self.consumer = LogConsumer(
            s,
            self.redis,
            group=GROUP,
            consumer=CONSUMER,
            handler=self.enqueuer.handle,
            batch_size=s.batch_size,
            poll_ms=s.poll_ms,
            reclaim_idle_ms=s.reclaim_idle_ms,
            probe=self.ready_dependencies,
        )
        self._consumer_task = asyncio.create_task(self._consume(self.consumer))

    async def _unlead(self) -> None:
        consumer, self.consumer = self.consumer, None
        task, self._consumer_task = self._consumer_task, None
        if task is not None:
            await cancel_and_wait([task], 5.0, "hooks consumer start")
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()

    @staticmethod
    async def _consume(consumer: LogConsumer) -> None:
        """Start the consumer, retrying while Redis is unreachable."""
        delay = 0.2
        while True:
            try:
                await consumer.start()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer start failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _gauges(self) -> None:
        """Refresh the backlog and dead-letter gauges (every endpoint, from any instance)."""
        while True:
            try:
                backlog, dead = await self.store.backlog()
                endpoints = {e.id for e in await self.store.endpoints()}
                for values, fresh in ((self.metrics.backlog, backlog), (self.metrics.dead, dead)):
                    values.clear()
                    values.update({e: fresh.get(e, 0) for e in endpoints})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("backlog refresh failed: %s", exc)
            await asyncio.sleep(self.settings.backlog_interval_s)

    async def stop(self) -> None:
        await cancel_and_wait(self.tasks, 12.0, "hooks tasks")  # leadership stops the consumer
        await self.heartbeat.stop()
        if self.pool is not None:
            await self.pool.close()
        await self.redis.aclose()
        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush()

    async def ready_redis(self) -> None:
        await self.redis.ping()

    async def ready_postgres(self) -> None:
        assert self.pool is not None
        await ping(self.pool)

    async def ready_dependencies(self) -> None:
        await self.ready_redis()
        await self.ready_postgres()

    async def consumer_progress(self) -> None:
        if self.consumer is not None:
            await self.consumer.consumer_progress()


def create_app(settings: HooksSettings | None = None) -> Starlette:
    settings = settings or HooksSettings()
    svc = HooksService(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await svc.start()
        app.router.routes.extend(svc.api.routes())
        try:
            yield
        finally:
            await svc.stop()

    app = Starlette(
        routes=health_routes([svc.ready_redis, svc.ready_postgres, svc.consumer_progress]),
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.service = svc
    return app
