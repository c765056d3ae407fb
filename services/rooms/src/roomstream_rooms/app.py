"""Assembles the service: Postgres (migrated), Redis, the projector and its consumer, the HTTP API,
the heartbeat and the consumer-lag probe, started and stopped by the ASGI lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from roomstream_kit.auth import TokenVerifier, redis_cutoff
from roomstream_kit.consumer import LogConsumer
from roomstream_kit.eventlog import EventLog
from roomstream_kit.http import exception_handlers, health_routes
from roomstream_kit.node import Heartbeat
from roomstream_kit.postgres import create_pool, ensure_database, migrate
from roomstream_kit.redis import REDIS_DOWN_ERRORS, AnyRedis, connect
from roomstream_kit.shutdown import cancel_and_wait
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from . import roster
from .api import RoomsApi
from .applied import AppliedSeqs
from .metrics import RoomsMetrics
from .projector import Projector
from .readmodels import ReadModels
from .settings import RoomsSettings
from .users import UserSessionsApi

log = logging.getLogger(__name__)

GROUP = "rooms"
MIGRATIONS = "roomstream_rooms.migrations"


async def consumer_lag(redis: AnyRedis, streams: list[str], group: str) -> tuple[int, int]:
    """(lag, pending) of `group` summed over the shards (XINFO GROUPS)."""
    lag = pending = 0
    for stream in streams:
        with contextlib.suppress(Exception):
            for info in await redis.xinfo_groups(stream):
                name = info.get("name")
                if (name.decode() if isinstance(name, bytes) else name) == group:
                    lag += int(info.get("lag") or 0)
                    pending += int(info.get("pending") or 0)
    return lag, pending


async def _bounded(what: str, step: Awaitable[Any], timeout_s: float) -> bool:
    """Run one shutdown step, giving up (and saying so) after `timeout_s`: SIGTERM must end."""
    # asyncio.wait, not wait_for: wait_for waits for a cancelled step to end, and a step that
    # swallows its cancellation would then hold the stop forever.
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        log.warning("shutdown: %s did not finish within %.0fs", what, timeout_s)
        return False
    if task.exception() is not None:
        log.warning("shutdown: %s failed: %s", what, task.exception())
        return False
    return True


def _counting(
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]],
    metrics: RoomsMetrics,
) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Wrap the kit's exception handlers to count API errors by code."""

    def wrap(
        handler: Callable[[Request, Exception], Awaitable[Response]],
    ) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def counted(request: Request, exc: Exception) -> Response:
            response = await handler(request, exc)
            code = "unknown"
            with contextlib.suppress(Exception):
                code = orjson.loads(bytes(response.body))["error"]["code"]
            metrics.api_errors.add(1, {"code": code})
            return response

        return counted

    return {exc: wrap(h) for exc, h in handlers.items()}


def create_app(settings: RoomsSettings) -> Starlette:
    node = settings.node_name("rooms")
    metrics = RoomsMetrics()
    state: dict[str, Any] = {}

    async def redis_ready() -> None:
        await state["redis"].ping()

    async def postgres_ready() -> None:
        async with state["pool"].acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def consumer_ready() -> None:
        if not state.get("consuming"):
            raise RuntimeError("the consumer has not started")
        await state["consumer"].consumer_progress()  # 503 while a batch is stuck

    async def dependencies() -> None:
        await redis_ready()
        await postgres_ready()

    routes = health_routes([redis_ready, postgres_ready, consumer_ready])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ensure_database(settings.database_url)
        pool = await create_pool(settings.database_url)
        await migrate(pool, "rooms", MIGRATIONS)
        redis = connect(settings)
        state.update(pool=pool, redis=redis)
        eventlog = EventLog.from_settings(redis, settings)
        read_models = ReadModels(redis, settings.keys)
        applied = AppliedSeqs(pool)
        projector = Projector(
            pool,
            redis,
            read_models,
            metrics,
            eventlog=eventlog,
            applied=applied,
            presence_grace_s=settings.presence_grace_s,
        )
        verifier = TokenVerifier(settings)
        verifier.cutoff = redis_cutoff(redis, settings.keys)  # revoked tokens: 401
        api = RoomsApi(
            verifier=verifier,
            eventlog=eventlog,
            read_models=read_models,
            projector=projector,
            applied=applied,
            pool=pool,
            metrics=metrics,
            apply_timeout_s=settings.apply_timeout_s,
        )
        # The API needs the pool and clients made here; uvicorn serves nothing before this.
        app.router.routes.extend(api.routes())
        users = UserSessionsApi(
            verifier=api.verifier, eventlog=eventlog, redis=redis, keys=settings.keys
        )
        app.router.routes.extend(users.routes())
        await projector.resync()
        await projector.load_skipped()
        consumer = LogConsumer(
            settings,
            redis,
            group=GROUP,
            consumer=node,
            handler=projector.apply_batch,
            batch_size=settings.batch_size,
            poll_ms=settings.poll_ms,
            reclaim_idle_ms=settings.reclaim_idle_ms,
            on_dead_letter=projector.skip_dead_letter,
            probe=dependencies,
        )
        state["consumer"] = consumer
        await consumer.start()
        state["consuming"] = True
        heartbeat = Heartbeat(
            redis,
            settings.keys,
            node,
            "rooms",
            interval_s=settings.heartbeat_interval_s,
            ttl_s=settings.heartbeat_ttl_s,
            address=f"http://{settings.host}:{settings.port}",
        )
        heartbeat.start()

        async def probe_lag() -> None:
            while True:
                with contextlib.suppress(*REDIS_DOWN_ERRORS):
                    metrics.lag, metrics.pending = await consumer_lag(
                        redis, settings.keys.all_logs(), GROUP
                    )
                await asyncio.sleep(settings.lag_interval_s)

        lag_task = asyncio.create_task(probe_lag(), name="rooms-lag")

        async def seed_rosters() -> None:
            """Rooms created before rosters existed (start-up migration; also on demand)."""
            try:
                await roster.seed_all(pool, eventlog)
            except Exception as exc:  # on demand seeding covers what is left
                log.warning("seeding membership rosters stopped: %s", exc)

        seed_task = asyncio.create_task(seed_rosters(), name="rooms-seed-rosters")
        log.info("rooms service %s listening on %s:%s", node, settings.host, settings.port)
        try:
            yield
        finally:
            state["consuming"] = False
            await cancel_and_wait([lag_task, seed_task], 2.0, "lag probe")
            await _bounded("consumer stop", consumer.stop(timeout_s=6.0), 7.0)
            await _bounded("heartbeat stop", heartbeat.stop(deregister=True), 3.0)
            await _bounded("redis close", redis.aclose(), 2.0)
            if not await _bounded("postgres close", pool.close(), 3.0):
                pool.terminate()

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=_counting(exception_handlers(), metrics),
    )
