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

Cost: the subscribers get a pass-through `parser` / `decoder`, so FastStream hands over the raw
`XREADGROUP` reply of a batch without looking at its entries (its default batch parser would
JSON-decode every entry, re-encode the batch and decode it again); each envelope is decoded once,
by pydantic straight from the stored JSON (`decode_entries`). What is left per entry is the Redis
reply parsing, that one decode and the `LogEntry`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, RedisClusterBroker, StreamSub
from pydantic import ValidationError
from redis.exceptions import ResponseError
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
    append = out.append
    # `roomstream_contracts.codec.decode_envelope`, without the extra call per entry.
    decode = Envelope.model_validate_json
    for entry_id, fields in raw:
        try:
            env = decode(fields[FIELD_EVENT])
        except (KeyError, TypeError, ValidationError, ValueError) as exc:
            log.error("skipping undecodable log entry %s %s: %s", stream, _str_id(entry_id), exc)
            continue
        if env.v > SCHEMA_VERSION:
            log.warning(
                "skipping entry %s %s of unknown schema version %s",
                stream,
                _str_id(entry_id),
                env.v,
            )
            continue
        append(
            LogEntry(stream, entry_id.decode() if isinstance(entry_id, bytes) else entry_id, env)
        )
    return out


def _str_id(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


async def _raw_parser(message: Any) -> StreamMessage[Any]:
    """FastStream `parser`: wrap the raw read (ids + field dicts) without touching the entries."""
    return StreamMessage(raw_message=message, body=b"", correlation_id="-")


async def _raw_decoder(msg: StreamMessage[Any]) -> Any:
    """FastStream `decoder`: the handler's body is the raw read itself."""
    return msg.raw_message


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
        self._broker_started = False
        self._inflight: dict[str, set[bytes | str]] = {stream: set() for stream in self.streams}
        """Entries this process is handling now, per stream: XAUTOCLAIM also returns our *own*
        entries once they waited longer than `reclaim_idle_ms` (a slow batch); those are left to
        their batch."""
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

        async def on_batch(raw: Any) -> None:
            await self._handle_raw(stream, raw["message_ids"], raw["data"])

        async def on_reclaimed(raw: Any) -> None:
            data: Any = raw["data"]
            pairs = list(
                zip(raw["message_ids"], data if isinstance(data, list) else [data], strict=True)
            )
            inflight = self._inflight[stream]
            pairs = [(i, d) for i, d in pairs if i not in inflight]
            if not pairs:
                return
            ids = [i for i, _ in pairs]
            log.info("reclaimed %d pending entries of %s", len(ids), stream)
            await self._handle_raw(stream, ids, [d for _, d in pairs])

        for sub, handler in ((live, on_batch), (reclaim, on_reclaimed)):
            self.broker.subscriber(
                stream=sub, ack_policy=AckPolicy.MANUAL, parser=_raw_parser, decoder=_raw_decoder
            )(handler)

    async def _handle_raw(self, stream: str, ids: Sequence[bytes], data: Sequence[Any]) -> None:
        inflight = self._inflight.setdefault(stream, set())
        inflight.update(ids)
        try:
            entries = decode_entries(stream, list(zip(ids, data, strict=True)))
            if entries:
                await self._call_handler(entries)
            await self._ack(stream, ids)
        finally:
            inflight.difference_update(ids)

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
        if self._stopping:
            return
        self._broker_started = True  # set first: a start cancelled midway is still stopped
        await self.broker.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the subscribers; bounded, even if the broker was stopped while it was starting."""
        self._stopping = True
        if not self._broker_started:
            return
        stopping = asyncio.ensure_future(self.broker.stop())
        done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
        if not done:
            log.warning("consumer %s did not stop within %.0f s", self.consumer, timeout_s)
            stopping.cancel()
        elif stopping.exception() is not None:
            log.warning("consumer %s stop failed: %s", self.consumer, stopping.exception())
