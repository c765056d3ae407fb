"""The delivery tail: one blocking XREAD over every shard, without a consumer group.

It starts at the shards' current ends and keeps the last id per shard, so after a Redis error it
backs off and resumes exactly where it stopped: nothing is skipped. Any other error (a bug, an
unexpected reply) is logged and the loop goes on from the next id: the tail must not die, or
delivery would stop silently for every socket of the gateway (`/readyz` also checks it runs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from roomstream_contracts.streams import StreamKeys
from roomstream_kit.redis import REDIS_DOWN_ERRORS, AnyRedis, same_slot_groups
from roomstream_kit.redis import text as redis_text
from roomstream_kit.retry import Backoff

from .hub import Hub
from .metrics import GatewayMetrics

log = logging.getLogger(__name__)


class Tail:
    def __init__(
        self,
        redis: AnyRedis,
        keys: StreamKeys,
        hub: Hub,
        metrics: GatewayMetrics,
        *,
        block_ms: int,
        count: int,
    ) -> None:
        self.redis = redis
        self.hub = hub
        self.metrics = metrics
        self.block_ms = block_ms
        self.count = count
        self.ids: dict[Any, Any] = dict.fromkeys(keys.all_logs(), "0-0")
        self.control: Callable[[list[dict[bytes, bytes]]], None] | None = None
        """Sees every batch before delivery (token lifecycle: `user_kicked`, `tokens_revoked`)."""
        self.stopping = False

    def stop(self) -> None:
        """Make the loop end at its next turn, whatever the read it is in does with a
        cancellation (the caller still cancels the task and bounds its wait)."""
        self.stopping = True

    async def seek_end(self) -> None:
        """Start after the last entry of every shard (the `$` of XREAD, made explicit)."""
        for key in list(self.ids):
            last: Any = await self.redis.xrevrange(key, "+", "-", count=1)
            if last:
                self.ids[key] = redis_text(last[0][0])

    async def run(self) -> None:
        """One blocking reader over all shards (a Redis Cluster: one per hash slot)."""
        groups = same_slot_groups(self.redis, list(self.ids))
        await asyncio.gather(*(self._read(group) for group in groups))

    async def _read(self, group: list[str]) -> None:
        backoff = Backoff(0.05, 2.0)
        while not self.stopping:
            streams: dict[Any, Any] = {key: self.ids[key] for key in group}
            try:
                reply = await self.redis.xread(streams, count=self.count, block=self.block_ms)
            except REDIS_DOWN_ERRORS as exc:
                delay = backoff.next_delay()
                log.warning("tail: redis unavailable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. a reply redis-py cannot parse: log, back off, go on
                delay = backoff.next_delay()
                log.exception("tail: read failed; retrying in %.2fs", delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if reply and not self.stopping:
                try:
                    self._deliver(reply)
                except Exception:  # the ids are advanced first: go on from the next entry
                    log.exception("tail: batch failed")

    def _deliver(self, reply: Any) -> None:
        entries: list[dict[bytes, bytes]] = []
        for stream, items in reply:
            if not items:
                continue
            self.ids[redis_text(stream)] = redis_text(items[-1][0])
            entries.extend(fields for _, fields in items)
        self.metrics.events_received.add(len(entries))
        if self.control is not None:
            try:
                self.control(entries)
            except Exception:  # must not cost the batch its delivery
                log.exception("tail: control hook failed")
        self.hub.deliver_counted(entries, self.metrics)
