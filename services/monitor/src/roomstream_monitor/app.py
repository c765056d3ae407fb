"""Wiring and lifecycle of one monitor process.

Start: heartbeat (kind "monitor"), the log consumer (group "monitor") counting message rates, the
stats collector and the dead-node detector, each a background task that rides out Redis being
away (it logs, waits and retries). Stop (SIGTERM): stop them and deregister the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from roomstream_kit.auth import TokenVerifier
from roomstream_kit.consumer import LogConsumer
from roomstream_kit.eventlog import EventLog
from roomstream_kit.node import Heartbeat
from roomstream_kit.redis import connect, redis_unavailable
from roomstream_kit.shutdown import cancel_and_wait
from roomstream_kit.telemetry import shutdown_telemetry
from starlette.applications import Starlette

from .api import MonitorApi, build_app
from .detector import DeadNodeDetector
from .metrics import MonitorMetrics
from .rates import MessageCounter
from .registry import Registry
from .settings import MonitorSettings
from .stats import Collector

log = logging.getLogger(__name__)

CONSUMER_GROUP = "monitor"
KIND = "monitor"


async def _start_consumer(consumer: LogConsumer) -> None:
    """Start the log consumer, retrying while Redis is unreachable."""
    delay = 0.2
    while True:
        try:
            await consumer.start()
            return
        except Exception as exc:
            if not redis_unavailable(exc):
                raise
            log.warning("log consumer cannot start yet: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def create_app(settings: MonitorSettings) -> Starlette:
    node = settings.node_name(KIND)
    redis = connect(settings)
    registry = Registry(redis, settings.keys)
    collector_ref: list[Collector] = []
    metrics = MonitorMetrics(lambda: collector_ref[0].fresh_snapshot() if collector_ref else None)
    detector = DeadNodeDetector(
        registry,
        EventLog.from_settings(redis, settings),
        metrics,
        monitor_node=node,
        timeout_s=settings.node_timeout_s,
        keep_failed_s=settings.failed_keep_s,
    )
    collector = Collector(settings, redis, registry, metrics, on_redis_error=detector.redis_failed)
    collector_ref.append(collector)
    counter = MessageCounter(redis, settings.namespace, settings.rate_window_s, metrics)
    consumer = LogConsumer(
        settings, redis, group=CONSUMER_GROUP, consumer=node, handler=counter.handle
    )
    heartbeat = Heartbeat(
        redis,
        settings.keys,
        node,
        KIND,
        interval_s=settings.heartbeat_interval_s,
        ttl_s=settings.heartbeat_ttl_s,
        address=f"{settings.host}:{settings.port}",
    )

    async def redis_ready() -> None:
        await redis.ping()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        heartbeat.start()
        tasks = [
            asyncio.create_task(collector.run(), name="stats"),
            asyncio.create_task(detector.run(settings.check_interval_s), name="detector"),
            asyncio.create_task(_start_consumer(consumer), name="consumer-start"),
        ]
        log.info("monitor %s started on port %d", node, settings.port)
        try:
            yield
        finally:
            await cancel_and_wait(tasks, 5.0, "monitor tasks")
            with contextlib.suppress(Exception):
                await consumer.stop()
            await heartbeat.stop(deregister=True)
            await collector.close()
            await redis.aclose()
            shutdown_telemetry()
            log.info("monitor %s stopped", node)

    async def consumer_progress() -> None:
        await consumer.consumer_progress()  # 503 while a batch is stuck

    api = MonitorApi(settings, registry, collector, TokenVerifier(settings))
    return build_app(api, [redis_ready, consumer_progress], lifespan)
