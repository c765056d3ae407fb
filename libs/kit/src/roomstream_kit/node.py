"""The heartbeat of a running process in the node registry.

Every gateway and service instance writes `rs:node:NODE` (a hash with a TTL) and its score in the
`rs:nodes` sorted set every `heartbeat_interval_s`. On a clean stop it removes both, so the monitor
can tell a deregistered node from a failed one (whose record merely expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from roomstream_contracts.ids import now_ms
from roomstream_contracts.streams import StreamKeys

from .redis import REDIS_DOWN_ERRORS, AnyRedis, redis_unavailable

log = logging.getLogger(__name__)


def process_stats() -> dict[str, float]:
    """RSS bytes and cumulative CPU seconds of this process, from /proc where available."""
    rss = 0
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    t = os.times()
    return {"memory_bytes": float(rss), "cpu_seconds": t.user + t.system}


class Heartbeat:
    """Publishes this node's record until stopped. `stats` adds service-specific fields."""

    def __init__(
        self,
        redis: AnyRedis,
        keys: StreamKeys,
        node: str,
        kind: str,
        *,
        interval_s: float,
        ttl_s: float,
        stats: Callable[[], dict[str, Any]] | None = None,
        address: str = "",
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.node = node
        self.kind = kind
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.stats = stats or dict
        self.address = address
        self.started_ms = now_ms()
        self._task: asyncio.Task[None] | None = None
        self._cpu_last: tuple[float, float] | None = None

    async def beat(self) -> None:
        proc = process_stats()
        wall = time.monotonic()
        cpu_percent = 0.0
        if self._cpu_last is not None:
            dt = wall - self._cpu_last[0]
            if dt > 0:
                cpu_percent = 100.0 * (proc["cpu_seconds"] - self._cpu_last[1]) / dt
        self._cpu_last = (wall, proc["cpu_seconds"])
        now = now_ms()
        record: dict[str, Any] = {
            "node": self.node,
            "kind": self.kind,
            "address": self.address,
            "pid": os.getpid(),
            "started_ms": self.started_ms,
            "last_seen_ms": now,
            "uptime_s": round((now - self.started_ms) / 1000, 1),
            "memory_bytes": int(proc["memory_bytes"]),
            "cpu_percent": round(cpu_percent, 1),
        }
        record.update(self.stats())
        key = self.keys.node(self.node)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={k: str(v) for k, v in record.items()})
            pipe.pexpire(key, int(self.ttl_s * 1000))
            pipe.zadd(self.keys.nodes(), {self.node: now})
            await pipe.execute()

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as exc:
                if not redis_unavailable(exc):
                    raise
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"heartbeat-{self.node}")

    async def stop(self, *, deregister: bool = True) -> None:
        """Stop beating; with `deregister`, remove the record (a clean shutdown, not a failure)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if deregister:
            with contextlib.suppress(*REDIS_DOWN_ERRORS):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.delete(self.keys.node(self.node))
                    pipe.zrem(self.keys.nodes(), self.node)
                    await pipe.execute()
