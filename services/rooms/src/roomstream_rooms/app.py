"""Assembles the service on the kit's lifecycle (`roomstream_kit.service`): Postgres (migrated),
Redis, the projector and its consumer, the HTTP API, the heartbeat and the consumer-lag probe."""

from __future__ import annotations

import logging
from typing import Any

from roomstream_kit.auth import TokenVerifier, redis_cutoff
from roomstream_kit.consumer import LogConsumer
from roomstream_kit.dependencies import dependencies_ready
from roomstream_kit.eventlog import EventLog
from roomstream_kit.lag import consumer_lag
from roomstream_kit.lifecycle import Lifecycle
from roomstream_kit.node import Heartbeat
from roomstream_kit.postgres import open_on
from roomstream_kit.redis import connect, on_lifecycle
from roomstream_kit.service import service_app
from starlette.applications import Starlette

from . import roster
from .api import RoomsApi
from .applied import AppliedSeqs
from .metrics import RoomsMetrics
from .projector import Projector
from .publish import PublishApi, publish_api
from .readmarkers import ReadMarkerStore
from .readmodels import ReadModels
from .settings import RoomsSettings
from .userevents import UserEventsApi
from .users import UserSessionsApi

log = logging.getLogger(__name__)

GROUP = "rooms"
MIGRATIONS = "roomstream_rooms.migrations"


def create_app(settings: RoomsSettings) -> Starlette:
    node = settings.node_name("rooms")
    metrics = RoomsMetrics()

    async def start(life: Lifecycle) -> dict[str, Any]:
        pool = await open_on(life, settings.database_url, "rooms", MIGRATIONS, wait=False)
        redis = on_lifecycle(life, connect(settings))

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
        users = UserSessionsApi(
            verifier=verifier, eventlog=eventlog, redis=redis, keys=settings.keys
        )
        publish = publish_api(settings, node, redis, pool, verifier, metrics)
        life.on_stop("history client close", publish.history.aclose, 2.0)
        heartbeat = Heartbeat.from_settings(
            redis, settings, node, "rooms", address=f"http://{settings.host}:{settings.port}"
        )
        life.on_stop("heartbeat deregister", heartbeat.deregister, 3.0)
        user_events = UserEventsApi(verifier=verifier, eventlog=eventlog)
        await projector.resync()
        markers = ReadMarkerStore(pool, redis, settings.keys)
        await markers.refill()
        await projector.load_skipped()
        consumer = LogConsumer(
            settings,
            redis,
            group=GROUP,
            consumer=node,
            handler=markers.wrap(projector.apply_batch),
            batch_size=settings.batch_size,
            on_dead_letter=projector.skip_dead_letter,
            probe=lambda: dependencies_ready(redis, pool),
        )
        life.on_stop("consumer stop", lambda: consumer.stop(timeout_s=6.0), 7.0)
        await consumer.start()
        life.check("consumer", consumer.consumer_progress)  # 503 while a batch is stuck
        life.spawn("heartbeat", heartbeat.run)
        life.spawn("presence-grace", projector.run_grace)

        async def probe_lag() -> None:
            metrics.lag, metrics.pending = await consumer_lag(
                redis, settings.keys.all_logs(), GROUP
            )

        life.every("rooms-lag", settings.lag_interval_s, probe_lag)

        async def seed_rosters() -> None:
            """Rooms created before rosters existed (start-up migration; also on demand)."""
            try:
                await roster.seed_all(pool, eventlog)
            except Exception as exc:  # on demand seeding covers what is left
                log.warning("seeding membership rosters stopped: %s", exc)

        life.spawn("rooms-seed-rosters", seed_rosters)
        log.info("rooms service %s listening on %s:%s", node, settings.host, settings.port)
        return {
            "pool": pool,
            "redis": redis,
            "consumer": consumer,
            "rooms_api": api,
            "users_api": users,
            "publish_api": publish,
            "user_events_api": user_events,
        }

    return service_app(
        "rooms",
        routes=[
            *RoomsApi.routes(),
            *UserSessionsApi.routes(),
            *PublishApi.routes(),
            *UserEventsApi.routes(),
        ],
        start=start,
        errors=metrics.api_errors,
    )
