"""Wiring of the history service: Postgres, Redis, the consumer, the API, the periodic jobs.

`HistoryService` can also run in-process (tests, benchmarks): `await svc.start()` / `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import asyncpg
import httpx
from opentelemetry import trace
from roomstream_kit.auth import service_token
from roomstream_kit.consumer import LogConsumer
from roomstream_kit.http import health_routes
from roomstream_kit.node import Heartbeat
from roomstream_kit.postgres import create_pool, ensure_database, migrate
from roomstream_kit.redis import AnyRedis, connect
from roomstream_kit.shutdown import cancel_and_wait
from starlette.applications import Starlette

from .access import Access
from .api import HistoryApi, counted_exception_handlers
from .cache import LatestCache
from .metrics import HistoryMetrics
from .persist import Persister
from .retention import HistoryPurger, StreamTrimmer, every
from .settings import HistorySettings
from .store import HistoryStore, ping

log = logging.getLogger(__name__)

GROUP = "history"


async def open_database(settings: HistorySettings) -> asyncpg.Pool:
    """Pool with migrations applied; waits (with backoff) while Postgres is unreachable."""
    delay = 0.2
    while True:
        try:
            await ensure_database(settings.database_url)
            pool = await create_pool(settings.database_url, max_size=settings.pg_pool_size)
            await migrate(pool, "history", "roomstream_history.migrations")
            return pool
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            log.warning("postgres unavailable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


GC_THRESHOLDS = (10_000, 10, 10)
"""Collection thresholds of the history process (CPython's default: 700, 10, 10)."""


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for the persistence path (call once, after the
    imports, in the process that runs the service).

    Every log entry allocates a few dozen container objects (the reply's tuples and dicts, the
    pydantic envelope, its dicts, the `LogEntry`), a batch of 1000 of them lives until its
    transaction commits, and almost none of them form cycles (reference counting frees them). With
    the default thresholds that garbage triggered a young collection every 700 allocations and,
    every 100 of those, a full collection walking every object the imports left behind: ~8 µs of
    the ~24 µs of CPU per persisted event. Freezing the start-up heap (`gc.freeze`, its objects are
    never walked again) and collecting the young generation every 10,000 allocations brings that
    to ~0 (measured with `roomstream bench history persist`, see docs/benchmarks.md). Cycles are
    still collected, a little later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class HistoryService:
    def __init__(self, settings: HistorySettings, *, consume: bool = True) -> None:
        self.settings = settings
        self.node = settings.node_name("history")
        self.consume = consume
        self.metrics = HistoryMetrics()
        # redis-py 8 caps a pool at 100 connections and then raises; the API may have more
        # requests in flight than that under a reconnect storm.
        self.redis: AnyRedis = connect(settings, max_connections=settings.redis_max_connections)
        self.pool: asyncpg.Pool | None = None
        self.consumer: LogConsumer | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.http = httpx.AsyncClient(
            timeout=5.0, headers={"authorization": f"Bearer {service_token(settings)}"}
        )
        self.heartbeat = Heartbeat(
            self.redis,
            settings.keys,
            self.node,
            "history",
            interval_s=settings.heartbeat_interval_s,
            ttl_s=settings.heartbeat_ttl_s,
            address=f"http://{settings.host}:{settings.port}",
        )

    async def start(self) -> None:
        s = self.settings
        self.pool = await open_database(s)
        self.store = HistoryStore(self.pool)
        self.cache = LatestCache(self.redis, s.keys, s.latest_cache_ttl_s)
        self.persister = Persister(self.store, self.cache, self.metrics)
        self.access = Access(self.redis, s.keys, self.store, self.http, s.rooms_url)
        self.api = HistoryApi(s, self.redis, self.store, self.access, self.cache, self.metrics)
        self.heartbeat.start()
        if self.consume:
            self.consumer = LogConsumer(
                s,
                self.redis,
                group=GROUP,
                consumer=self.node,
                handler=self.persister.handle,
                batch_size=s.batch_size,
                poll_ms=s.poll_ms,
                reclaim_idle_ms=s.reclaim_idle_ms,
                probe=self.ready_dependencies,
            )
            # In the background: draining a long backlog (after a crash or an outage) must not
            # keep the API from serving.
            self.tasks.append(asyncio.create_task(self._consume(self.consumer)))
            trimmer = StreamTrimmer(self.redis, s, self.metrics)
            self.tasks.append(asyncio.create_task(every(s.retention_interval_s, trimmer, "trim")))
        if s.history_retention_days > 0:
            purger = HistoryPurger(self.store, self.cache, s, self.metrics)
            self.tasks.append(
                asyncio.create_task(every(s.history_retention_interval_s, purger, "purge"))
            )
        log.info("history service %s started", self.node)

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

    async def stop(self) -> None:
        await cancel_and_wait(self.tasks, 5.0, "history tasks")
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
        await self.heartbeat.stop()
        await self.http.aclose()
        if self.pool is not None:
            await self.pool.close()
        await self.redis.aclose()
        # uvicorn re-raises SIGTERM after shutdown, so atexit hooks may not run: flush spans now.
        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush()

    async def ready_redis(self) -> None:
        await self.redis.ping()

    async def ready_postgres(self) -> None:
        assert self.pool is not None
        await ping(self.pool)

    async def ready_dependencies(self) -> None:
        """Redis and Postgres answer (the consumer's probe before it dead-letters an entry)."""
        await self.ready_redis()
        await self.ready_postgres()

    async def consumer_progress(self) -> None:
        """503 while the consumer's current batch has been failing longer than the bound."""
        if self.consumer is not None:
            await self.consumer.consumer_progress()


def create_app(settings: HistorySettings | None = None) -> Starlette:
    settings = settings or HistorySettings()
    svc = HistoryService(settings)

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
        exception_handlers=counted_exception_handlers(svc.metrics),
        lifespan=lifespan,
    )
    app.state.service = svc
    return app
