"""Wiring of the history service on the kit's lifecycle (`roomstream_kit.service`): Postgres,
Redis, the consumer, the API, the periodic jobs.

`HistoryService` can also run in-process (tests, benchmarks): `await svc.start()` / `stop()`.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import asyncpg
import httpx
from roomstream_kit.auth import service_token
from roomstream_kit.consumer import LogConsumer
from roomstream_kit.dependencies import ConsumingService
from roomstream_kit.lifecycle import Lifecycle
from roomstream_kit.node import Heartbeat
from roomstream_kit.redis import AnyRedis, connect
from roomstream_kit.retry import always, retry
from starlette.applications import Starlette

from .access import Access
from .api import HistoryApi
from .cache import LatestCache
from .metrics import HistoryMetrics
from .persist import Persister
from .retention import HistoryPurger, StreamTrimmer
from .settings import HistorySettings
from .store import HistoryStore

log = logging.getLogger(__name__)

GROUP = "history"
MIGRATIONS = "roomstream_history.migrations"


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


class HistoryService(ConsumingService):
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
        self.life = Lifecycle("history")
        self.http = httpx.AsyncClient(
            timeout=5.0, headers={"authorization": f"Bearer {service_token(settings)}"}
        )
        self.heartbeat = Heartbeat.from_settings(
            self.redis,
            settings,
            self.node,
            "history",
            address=f"http://{settings.host}:{settings.port}",
        )

    async def start(self, life: Lifecycle | None = None) -> dict[str, Any]:
        """Open the dependencies and start the tasks on `life` (default: the service's own);
        returns the lifespan state (handlers read `request.state.history_api`)."""
        s = self.settings
        life, pool = await self.open_stores(
            life, s.database_url, "history", MIGRATIONS, s.pg_pool_size
        )
        life.on_stop("http close", self.http.aclose, 2.0)
        life.check("consumer", self.consumer_progress)  # 503 while a batch is stuck
        self.store = HistoryStore(pool)
        self.cache = LatestCache(self.redis, s.keys, s.latest_cache_ttl_s)
        self.persister = Persister(self.store, self.cache, self.metrics)
        self.access = Access(self.redis, s.keys, self.store, self.http, s.rooms_url)
        self.api = HistoryApi(s, self.redis, self.store, self.access, self.cache, self.metrics)
        life.on_stop("heartbeat deregister", self.heartbeat.deregister, 3.0)
        life.spawn("heartbeat", self.heartbeat.run)
        if self.consume:
            consumer = self.consumer = LogConsumer(
                s,
                self.redis,
                group=GROUP,
                consumer=self.node,
                handler=self.persister.handle,
                batch_size=s.batch_size,
                probe=self.ready_dependencies,
            )
            life.on_stop("consumer stop", consumer.stop, 11.0)
            # In the background: draining a long backlog (after a crash or an outage) must not
            # keep the API from serving. Retried while Redis is unreachable.
            life.spawn(
                "consumer-start",
                lambda: retry(consumer.start, what="consumer start", retry_if=always, logger=log),
            )
            trimmer = StreamTrimmer(self.redis, s, self.metrics)
            life.every("trim", s.retention_interval_s, trimmer.run_once)
        if s.history_retention_days > 0:
            purger = HistoryPurger(self.store, self.cache, s, self.metrics)
            life.every("purge", s.history_retention_interval_s, purger.run_once)
        log.info("history service %s started", self.node)
        return {
            "pool": pool,
            "redis": self.redis,
            "consumer": self.consumer,
            "history_api": self.api,
        }


def create_app(settings: HistorySettings | None = None) -> Starlette:
    svc = HistoryService(settings or HistorySettings())
    return svc.asgi_app("history", HistoryApi.routes(), errors=svc.metrics.api_errors)
