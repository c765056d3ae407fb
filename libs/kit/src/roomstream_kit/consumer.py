"""Consuming the log with a consumer group, in batches, at least once.

`LogConsumer` is a FastStream app: one batch subscriber per shard stream (`XREADGROUP`, group =
the service, consumer = this instance) and one reclaim subscriber per shard (`XAUTOCLAIM` with
`min_idle_time`) that takes over entries a dead consumer left pending. FastStream does not re-read
a consumer's own pending entries after a restart, so `start()` first drains this consumer's own
pending entries in order, before any new entry is read. XAUTOCLAIM also returns this consumer's
own entries once a slow batch kept them longer than `min_idle_time`; those still being handled in
this process are left to their batch instead of being handled twice at once.

The handler receives a batch of `LogEntry` and must be idempotent: an entry is acknowledged (XACK)
only after the handler returned, so a crash between the two delivers it again. A handler that
raises is retried with exponential backoff until it succeeds (a dependency that is down stalls the
consumer; it never skips entries). An entry whose envelope cannot be decoded is logged and
acknowledged: it can never succeed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, RedisClusterBroker, StreamSub
from faststream.redis.annotations import RedisStreamMessage
from pydantic import ValidationError
from redis.exceptions import ResponseError
from roomstream_contracts.codec import decode_envelope
from roomstream_contracts.events import SCHEMA_VERSION, Envelope
from roomstream_contracts.streams import FIELD_EVENT

from .redis import REDIS_DOWN_ERRORS, AnyRedis
from .settings import CommonSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LogEntry:
    stream: str
    entry_id: str
    envelope: Envelope


BatchHandler = Callable[[Sequence[LogEntry]], Awaitable[None]]


def decode_entries(
    stream: str, raw: Sequence[tuple[bytes | str, dict[bytes, bytes]]]
) -> list[LogEntry]:
    """Decode `(entry id, fields)` pairs, leaving out (and logging) undecodable ones."""
    out: list[LogEntry] = []
    for entry_id, fields in raw:
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        try:
            env = decode_envelope(fields[FIELD_EVENT])
        except (KeyError, TypeError, ValidationError, ValueError) as exc:
            log.error("skipping undecodable log entry %s %s: %s", stream, eid, exc)
            continue
        if env.v > SCHEMA_VERSION:
            log.warning("skipping entry %s %s of unknown schema version %s", stream, eid, env.v)
            continue
        out.append(LogEntry(stream, eid, env))
    return out


class LogConsumer:
    """Consumes every shard of the log as `consumer` in consumer group `group`."""

    def __init__(
        self,
        settings: CommonSettings,
        redis: AnyRedis,
        *,
        group: str,
        consumer: str,
        handler: BatchHandler,
        batch_size: int = 500,
        poll_ms: int = 100,
        reclaim_idle_ms: int = 30_000,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_backoff_s = max_backoff_s
        self.streams = settings.keys.all_logs()
        broker_cls = RedisClusterBroker if settings.redis_cluster else RedisBroker
        self.broker: RedisBroker = broker_cls(
            settings.redis_url, logger=logging.getLogger("faststream")
        )
        self._stopping = False
        self._inflight: set[tuple[str, bytes | str]] = set()
        """Entries this process is handling now: XAUTOCLAIM also returns our *own* entries once
        they waited longer than `reclaim_idle_ms` (a slow batch); those are left to their batch."""
        for stream in self.streams:
            self._subscribe(stream)

    # -- FastStream wiring -------------------------------------------------------------------

    def _subscribe(self, stream: str) -> None:
        live = StreamSub(
            stream,
            group=self.group,
            consumer=self.consumer,
            batch=True,
            max_records=self.batch_size,
            polling_interval=self.poll_ms,
            last_id=">",
        )
        reclaim = StreamSub(
            stream,
            group=self.group,
            consumer=self.consumer,
            min_idle_time=self.reclaim_idle_ms,
            polling_interval=max(self.poll_ms, 1000),
            last_id=">",
        )

        async def on_batch(body: Any, msg: RedisStreamMessage) -> None:
            data: Any = msg.raw_message["data"]
            await self._handle_raw(stream, msg.raw_message["message_ids"], data)

        async def on_reclaimed(body: Any, msg: RedisStreamMessage) -> None:
            raw: Any = msg.raw_message["data"]
            pairs = list(
                zip(
                    msg.raw_message["message_ids"],
                    raw if isinstance(raw, list) else [raw],
                    strict=True,
                )
            )
            pairs = [(i, d) for i, d in pairs if (stream, i) not in self._inflight]
            if not pairs:
                return
            ids = [i for i, _ in pairs]
            data = [d for _, d in pairs]
            log.info("reclaimed %d pending entries of %s", len(ids), stream)
            await self._handle_raw(stream, ids, data)

        self.broker.subscriber(stream=live, ack_policy=AckPolicy.MANUAL)(on_batch)
        self.broker.subscriber(stream=reclaim, ack_policy=AckPolicy.MANUAL)(on_reclaimed)

    async def _handle_raw(self, stream: str, ids: Sequence[bytes], data: Sequence[Any]) -> None:
        marks = [(stream, i) for i in ids]
        self._inflight.update(marks)
        try:
            entries = decode_entries(stream, list(zip(ids, data, strict=True)))
            if entries:
                await self._call_handler(entries)
            await self._ack(stream, ids)
        finally:
            self._inflight.difference_update(marks)

    # -- processing --------------------------------------------------------------------------

    async def _call_handler(self, entries: Sequence[LogEntry]) -> None:
        delay = 0.1
        while True:
            try:
                await self.handler(entries)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    raise
                log.warning(
                    "handler failed on %d entries (%s: %s); retrying in %.1fs",
                    len(entries),
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    async def _ack(self, stream: str, ids: Sequence[bytes | str]) -> None:
        delay = 0.1
        while True:
            try:
                await self.redis.xack(stream, self.group, *ids)
                return
            except REDIS_DOWN_ERRORS:
                if self._stopping:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    async def ensure_groups(self) -> None:
        """Create the consumer group on every shard from the log's beginning (id 0)."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def drain_own_pending(self) -> int:
        """Process, in order, the entries this consumer read but did not acknowledge before."""
        total = 0
        for stream in self.streams:
            last = "0"
            while True:
                reply: Any = await self.redis.xreadgroup(
                    self.group, self.consumer, {stream: last}, count=self.batch_size
                )
                raw = reply[0][1] if reply else []
                if not raw:
                    break
                ids = [entry_id for entry_id, _ in raw]
                await self._handle_raw(stream, ids, [fields for _, fields in raw])
                total += len(raw)
                last = ids[-1].decode() if isinstance(ids[-1], bytes) else ids[-1]
        if total:
            log.info("drained %d own pending entries", total)
        return total

    async def start(self) -> None:
        await self.ensure_groups()
        await self.drain_own_pending()
        await self.broker.start()

    async def stop(self) -> None:
        self._stopping = True
        await self.broker.stop()
