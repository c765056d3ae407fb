"""Counting `message` events into the shared per-second buckets (the log consumer's handler).

The monitor consumes the log in its own consumer group "monitor"; every instance adds its share
of the counts to the same Redis buckets, so the rates are global however many monitors run.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.cluster import RedisCluster
from roomstream_contracts.events import EventKind
from roomstream_contracts.ids import now_ms
from roomstream_kit.consumer import LogEntry
from roomstream_kit.redis import AnyRedis

from . import keys as monitor_keys
from .metrics import MonitorMetrics
from .window import count_batch


class MessageCounter:
    def __init__(
        self, redis: AnyRedis, namespace: str, window_s: int, metrics: MonitorMetrics
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.window_s = window_s
        self.metrics = metrics

    async def handle(self, entries: Sequence[LogEntry]) -> None:
        kinds: dict[str, int] = {}
        for entry in entries:
            kind = entry.envelope.kind.value
            kinds[kind] = kinds.get(kind, 0) + 1
        messages = [
            (e.envelope.ts, e.envelope.room or "")
            for e in entries
            if e.envelope.kind is EventKind.MESSAGE
        ]
        buckets = count_batch(messages, now_ms() // 1000, self.window_s)
        if buckets:
            # The version moves after the buckets did, so a collector that read it before them
            # reads them again next time. One server runs a pipeline in order; a cluster
            # pipeline sends to its nodes at once, so there the version is a step of its own.
            version = monitor_keys.rate_version(self.namespace)
            ordered = not isinstance(self.redis, RedisCluster)
            async with self.redis.pipeline(transaction=False) as pipe:
                for second, counts in buckets.items():
                    key = monitor_keys.rate_bucket(self.namespace, second)
                    for room, n in counts.items():
                        pipe.hincrby(key, room, n)
                    pipe.expire(key, self.window_s + 120)
                if ordered:
                    pipe.incr(version)
                await pipe.execute()
            if not ordered:
                await self.redis.incr(version)
        for kind, n in kinds.items():
            self.metrics.events_consumed.add(n, {"kind": kind})
