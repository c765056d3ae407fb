"""The heartbeat of a running process in the node registry.

Every gateway and service instance writes `rs:node:NODE` (a hash with a TTL) and its score in the
`rs:nodes` sorted set every `heartbeat_interval_s`. On a clean stop it removes both, so the monitor
can tell a deregistered node from a failed one (whose record merely expires).

**Incarnations.** A node id (`ROOMSTREAM_NODE_ID`) is stable across restarts; each process life
of it is an *incarnation*, an integer claimed at start by `INCARNATION_SCRIPT`: the start time in
ms, made strictly greater than the node's previous incarnation (kept in `rs:incarnations:{rs:nodes}`),
so a restart on a host whose clock is behind still gets a newer one. The claim also refreshes the
node's score in `rs:nodes` in the same atomic step: the monitor can never see the new incarnation
registered while the node still looks stale, and declare it dead. Gateways carry the incarnation in
their `connected` / `disconnected` events and append `node_started` when they start; the rooms
service then retires the connections of every older incarnation at once (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from roomstream_contracts.events import Envelope, EventKind, NodeStartedData
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys

from .redis import REDIS_DOWN_ERRORS, AnyRedis, redis_unavailable

if TYPE_CHECKING:
    from .settings import CommonSettings

log = logging.getLogger(__name__)

INCARNATION_SCRIPT = """
-- KEYS[1] incarnations hash, KEYS[2] nodes zset; ARGV[1] node, ARGV[2] now (ms)
local now = tonumber(ARGV[2])
local inc = now
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if inc <= last then inc = last + 1 end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', inc))
redis.call('ZADD', KEYS[2], string.format('%d', now), ARGV[1])
return inc
"""
"""Claim this process's incarnation (> every earlier one of the node) and beat, atomically."""


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
        self.incarnation: int | None = None
        """This process life's incarnation, once `register` has claimed it."""
        self._claim = redis.register_script(INCARNATION_SCRIPT)
        self._task: asyncio.Task[None] | None = None
        self._cpu_last: tuple[float, float] | None = None

    @classmethod
    def from_settings(
        cls,
        redis: AnyRedis,
        settings: CommonSettings,
        node: str,
        kind: str,
        *,
        address: str,
        stats: Callable[[], dict[str, Any]] | None = None,
    ) -> Heartbeat:
        """The heartbeat of a service process: keys, interval and TTL from its settings."""
        return cls(
            redis,
            settings.keys,
            node,
            kind,
            interval_s=settings.heartbeat_interval_s,
            ttl_s=settings.heartbeat_ttl_s,
            stats=stats,
            address=address,
        )

    async def register(self) -> int:
        """Claim this process's incarnation (once; later calls return it)."""
        if self.incarnation is None:
            keys = [self.keys.incarnations(), self.keys.nodes()]
            self.incarnation = int(await self._claim(keys=keys, args=[self.node, now_ms()]))
            log.info("node %s incarnation %d", self.node, self.incarnation)
        return self.incarnation

    async def beat(self) -> None:
        incarnation = await self.register()
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
            "incarnation": incarnation,
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

    async def run(self) -> None:
        """Beat every `interval_s` until cancelled. No failure ends the loop: a Redis outage is
        a warning, anything else is logged with its traceback, and the next beat is tried."""
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if redis_unavailable(exc):
                    log.warning("heartbeat failed: %s", exc)
                else:
                    log.exception("heartbeat failed")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        """Beat in a task of its own (processes without a `Lifecycle` to supervise it)."""
        self._task = asyncio.create_task(self.run(), name=f"heartbeat-{self.node}")

    async def deregister(self) -> None:
        """Remove the node record: a clean stop, not a failure (Redis away: left to expire)."""
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.node(self.node))
                pipe.zrem(self.keys.nodes(), self.node)
                await pipe.execute()

    async def stop(self, *, deregister: bool = True) -> None:
        """Stop beating; with `deregister`, remove the record (a clean shutdown, not a failure)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if deregister:
            await self.deregister()


def node_started_envelope(node: str, kind: str, incarnation: int) -> Envelope:
    """The `node_started` event of a new incarnation (sharded by `node:ID`)."""
    return Envelope(
        id=new_event_id(),
        kind=EventKind.NODE_STARTED,
        node=node,
        ts=now_ms(),
        data=NodeStartedData(node=node, incarnation=incarnation, kind=kind).model_dump(),
    )
