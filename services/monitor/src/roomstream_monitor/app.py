"""Wiring of one monitor process on the kit's lifecycle (`roomstream_kit.service`).

Start: heartbeat (kind "monitor"), the log consumer (group "monitor") counting message rates, the
stats collector and the dead-node detector, each a supervised background task that rides out
Redis being away (it logs, waits and retries). Stop (SIGTERM): stop them and deregister the node.
"""

from __future__ import annotations

import logging
from typing import Any

from roomstream_kit.auth import TokenVerifier
from roomstream_kit.consumer import LogConsumer
from roomstream_kit.eventlog import EventLog
from roomstream_kit.lifecycle import Lifecycle
from roomstream_kit.node import Heartbeat
from roomstream_kit.redis import connect, on_lifecycle, redis_unavailable
from roomstream_kit.retry import retry
from roomstream_kit.service import service_app
from starlette.applications import Starlette

from .api import MonitorApi
from .detector import DeadNodeDetector
from .metrics import MonitorMetrics
from .rates import MessageCounter
from .registry import Registry
from .settings import MonitorSettings
from .stats import Collector

log = logging.getLogger(__name__)

CONSUMER_GROUP = "monitor"
KIND = "monitor"


def create_app(settings: MonitorSettings) -> Starlette:
    node = settings.node_name(KIND)
    metrics = MonitorMetrics()

    async def start(life: Lifecycle) -> dict[str, Any]:
        redis = on_lifecycle(life, connect(settings))
        registry = Registry(redis, settings.keys)
        detector = DeadNodeDetector(
            registry,
            EventLog.from_settings(redis, settings),
            metrics,
            monitor_node=node,
            timeout_s=settings.node_timeout_s,
            keep_failed_s=settings.failed_keep_s,
        )
        collector = Collector(
            settings, redis, registry, metrics, on_redis_error=detector.redis_failed
        )
        life.on_stop("collector close", collector.close, 2.0)
        metrics.observe(collector.fresh_snapshot)
        counter = MessageCounter(redis, settings.namespace, settings.rate_window_s, metrics)
        consumer = LogConsumer(
            settings,
            redis,
            group=CONSUMER_GROUP,
            consumer=node,
            handler=counter.handle,
            batch_size=settings.batch_size,
        )
        heartbeat = Heartbeat.from_settings(
            redis, settings, node, KIND, address=f"{settings.host}:{settings.port}"
        )
        life.on_stop("heartbeat deregister", heartbeat.deregister, 3.0)
        life.on_stop("consumer stop", consumer.stop, 11.0)
        life.check("consumer", consumer.consumer_progress)  # 503 while a batch is stuck
        life.spawn("heartbeat", heartbeat.run)
        life.spawn("stats", collector.run)
        life.spawn("detector", lambda: detector.run(settings.check_interval_s))
        life.spawn(
            "consumer-start",
            lambda: retry(
                consumer.start, what="log consumer start", retry_if=redis_unavailable, logger=log
            ),
        )
        log.info("monitor %s started on port %d", node, settings.port)
        api = MonitorApi(settings, registry, collector, TokenVerifier(settings))
        return {"redis": redis, "consumer": consumer, "monitor_api": api}

    return service_app(KIND, routes=MonitorApi.routes(), start=start)
