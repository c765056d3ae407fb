"""Wiring of the webhooks service on the kit's lifecycle (`roomstream_kit.service`): Postgres,
the consumer (log → outbox), the delivery workers (outbox → endpoints), the API. `HooksService`
can also run in-process: `start()` / `stop()`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from roomstream_kit.consumer import LogConsumer
from roomstream_kit.dependencies import ConsumingService
from roomstream_kit.lifecycle import Lifecycle
from roomstream_kit.node import Heartbeat
from roomstream_kit.redis import AnyRedis, connect
from roomstream_kit.retry import always, retry
from roomstream_kit.shutdown import bounded, cancel_and_wait
from starlette.applications import Starlette

from .api import HooksApi
from .delivery import Dispatcher
from .enqueue import Enqueuer
from .leader import CONSUMER, Leadership
from .metrics import HooksMetrics
from .model import parse_env_endpoints
from .settings import HooksSettings
from .store import HooksStore

log = logging.getLogger(__name__)

GROUP = "hooks"
MIGRATIONS = "roomstream_hooks.migrations"


class HooksService(ConsumingService):
    def __init__(self, settings: HooksSettings) -> None:
        self.settings = settings
        self.node = settings.node_name("hooks")
        self.env_endpoints = parse_env_endpoints(settings.hooks_endpoints)  # fail fast
        self.metrics = HooksMetrics()
        self.redis: AnyRedis = connect(settings)
        self.pool: asyncpg.Pool | None = None
        self.consumer: LogConsumer | None = None
        self._consumer_task: asyncio.Task[None] | None = None
        self.life = Lifecycle("hooks", task_stop_s=12.0)  # leadership stops the consumer
        self.heartbeat = Heartbeat.from_settings(
            self.redis,
            settings,
            self.node,
            "hooks",
            address=f"http://{settings.advertised_host()}:{settings.port}",  # monitor scrapes
        )

    async def start(self, life: Lifecycle | None = None) -> dict[str, Any]:
        """Open the dependencies and start the tasks on `life` (default: the service's own);
        returns the lifespan state (handlers read `request.state.hooks_api`)."""
        s = self.settings
        life, pool = await self.open_stores(
            life, s.database_url, "hooks", MIGRATIONS, s.pg_pool_size
        )
        life.check("consumer", self.consumer_progress)
        self.store = HooksStore(pool)
        for spec in self.env_endpoints:
            assert spec.id is not None and spec.secret is not None
            await self.store.upsert_endpoint(
                spec.id, spec.url, spec.secret, spec.kinds, spec.rooms, "env"
            )
        self.dispatcher = Dispatcher(self.store, s, self.metrics, self.node)
        self.api = HooksApi(s, self.store, self.dispatcher, self.metrics)
        self.enqueuer = Enqueuer(self.store, self.metrics, self.dispatcher.wake)
        life.on_stop("heartbeat deregister", self.heartbeat.deregister, 3.0)
        life.spawn("heartbeat", self.heartbeat.run)
        self.leadership = Leadership(s.database_url, s.namespace, self._lead, self._unlead)
        life.spawn("hooks-dispatcher", self.dispatcher.run)
        life.spawn("hooks-leadership", self.leadership.run)
        life.every("hooks-gauges", s.backlog_interval_s, self._gauges)
        log.info("hooks service %s started", self.node)
        return {"pool": pool, "redis": self.redis, "hooks_api": self.api}

    async def _lead(self) -> None:
        """This instance leads: consume the log (see `leader`)."""
        s = self.settings
        consumer = self.consumer = LogConsumer(
            s,
            self.redis,
            group=GROUP,
            consumer=CONSUMER,
            handler=self.enqueuer.handle,
            batch_size=s.batch_size,
            probe=self.ready_dependencies,
        )
        # Retried while Redis is unreachable.
        self._consumer_task = asyncio.create_task(
            retry(consumer.start, what="consumer start", retry_if=always, logger=log),
            name="hooks-consumer-start",
        )

    async def _unlead(self) -> None:
        consumer, self.consumer = self.consumer, None
        task, self._consumer_task = self._consumer_task, None
        if task is not None:
            await cancel_and_wait([task], 5.0, "hooks consumer start")
        if consumer is not None:
            await bounded(consumer.stop(), 11.0, "hooks consumer stop")

    async def _gauges(self) -> None:
        """Refresh the backlog and dead-letter gauges (every endpoint, from any instance)."""
        backlog, dead = await self.store.backlog()
        endpoints = {e.id for e in await self.store.endpoints()}
        for values, fresh in ((self.metrics.backlog, backlog), (self.metrics.dead, dead)):
            values.clear()
            values.update({e: fresh.get(e, 0) for e in endpoints})


def create_app(settings: HooksSettings | None = None) -> Starlette:
    svc = HooksService(settings or HooksSettings())
    return svc.asgi_app(
        "hooks", HooksApi.routes(), lifecycle=lambda: Lifecycle("hooks", task_stop_s=12.0)
    )
