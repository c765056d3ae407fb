"""Consuming the log with a consumer group, in batches, at least once.

`LogConsumer` is a FastStream app: one batch subscriber per shard stream (`XREADGROUP BLOCK
poll_ms`, group = the service, consumer = this instance), plus one reclaim job of its own that
takes over the entries a dead consumer left pending: every `reclaim_interval_ms` (default half of
`reclaim_idle_ms`) it runs `XAUTOCLAIM` with `min_idle_time = reclaim_idle_ms` over every shard
and handles what it claimed, so a dead consumer's entry is taken over at most
`reclaim_idle_ms + reclaim_interval_ms` after it was delivered. (Not FastStream's reclaim
subscriber: it polls one shard with `XAUTOCLAIM COUNT 1` every second, 8 commands a second per
idle service for an event that happens when a process dies; docs/benchmarks.md, "Issue 12".)
FastStream does not re-read a consumer's own pending entries after a restart, so `start()` first
drains this consumer's own pending entries in order, before any new entry is read. XAUTOCLAIM
also returns this consumer's own entries once a slow batch kept them longer than
`reclaim_idle_ms`; those still being handled in this process are left to their batch instead of
being handled twice at once.

A blocking read returns as soon as an entry arrives, so `poll_ms` only sets how often an idle
shard is asked again (the broker's socket timeout is set above it: redis-py's default of 5 s would
cut longer reads); `stop()` cancels the blocked reads (FastStream cancels its read tasks; the
reclaim job is cancelled), so it does not wait for a read to time out.

The handler receives a batch of `LogEntry` and must be idempotent: an entry is acknowledged (XACK)
only after the handler returned, so a crash between the two delivers it again.

No entry may stall a consumer (docs/architecture.md, "Dead letters"). When the handler raises:
- a *transient* failure (`failures.is_transient`: Redis / Postgres away, `Retry`) retries the same
  entries with exponential backoff for as long as it takes; nothing is skipped or dead-lettered;
- any other failure isolates the failing entry: the batch is split in halves, each handled (in
  order) on its own, down to one entry. One entry that fails with a data error
  (`failures.is_data_error`), or `max_attempts` times with the dependencies up (`probe`), is
  *dead-lettered*: `on_dead_letter` (the service's hook, e.g. "this seq is skipped") runs, then
  one step records the entry in the shard's dead-letter stream (`StreamKeys.dead_letters`),
  counts it (`dead_letter_counts`) and acknowledges it; the entries after it keep flowing.
An entry whose envelope cannot be decoded is dead-lettered the same way (the hook is not called:
there is no envelope). A batch that has been failing or running longer than `stuck_after_s`
makes `consumer_progress` (a readiness check) fail: `/readyz` answers 503 with the reason.

Cost: the subscribers get a pass-through `parser` / `decoder`, so FastStream hands over the raw
`XREADGROUP` reply of a batch without looking at its entries (its default batch parser would
JSON-decode every entry, re-encode the batch and decode it again); each envelope is decoded once,
by pydantic straight from the stored JSON (`decode_entries`). What is left per entry is the Redis
reply parsing, that one decode and the `LogEntry`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, RedisClusterBroker, StreamSub
from opentelemetry.metrics import CallbackOptions, Observation
from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError
from roomstream_contracts.events import SCHEMA_VERSION, Envelope
from roomstream_contracts.ids import now_ms
from roomstream_contracts.streams import DEFAULT_DEAD_LETTER_MAXLEN, FIELD_EVENT

from .deadletters import dead_letter_record
from .failures import describe, is_data_error, is_transient
from .logs import tame_faststream_logging
from .redis import REDIS_DOWN_ERRORS, AnyRedis, text
from .retry import Backoff, retry
from .settings import CommonSettings, ConsumerSettings
from .shutdown import cancel_and_wait
from .telemetry import meter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LogEntry:
    stream: str
    entry_id: str
    envelope: Envelope
    fields: Mapping[bytes, bytes] | None = None
    """The entry's raw stream fields (kept for its dead-letter record)."""


BatchHandler = Callable[[Sequence[LogEntry]], Awaitable[None]]
DeadLetterHook = Callable[[LogEntry, BaseException], Awaitable[None]]
Probe = Callable[[], Awaitable[object]]

_RawEntry = tuple[bytes | str, Any]


@dataclass(frozen=True, slots=True)
class Undecodable:
    entry_id: bytes | str
    fields: Any
    error: str


def split_entries(
    stream: str, raw: Sequence[_RawEntry]
) -> tuple[list[LogEntry], list[Undecodable]]:
    """Decode `(entry id, fields)` pairs: the entries, and those that cannot be decoded.

    Entries of a newer schema version are left out of both (logged): a newer consumer handles
    them."""
    out: list[LogEntry] = []
    bad: list[Undecodable] = []
    append = out.append
    # `roomstream_contracts.codec.decode_envelope`, without the extra call per entry.
    decode = Envelope.model_validate_json
    for entry_id, fields in raw:
        try:
            env = decode(fields[FIELD_EVENT])
        except (KeyError, TypeError, ValidationError, ValueError) as exc:
            bad.append(Undecodable(entry_id, fields, describe(exc)))
            continue
        if env.v > SCHEMA_VERSION:
            log.warning(
                "skipping entry %s %s of unknown schema version %s",
                stream,
                text(entry_id),
                env.v,
            )
            continue
        append(LogEntry(stream, text(entry_id), env, fields))
    return out, bad


def decode_entries(stream: str, raw: Sequence[_RawEntry]) -> list[LogEntry]:
    """Decode `(entry id, fields)` pairs, leaving out (and logging) undecodable ones."""
    out, bad = split_entries(stream, raw)
    for b in bad:
        log.error("skipping undecodable log entry %s %s: %s", stream, text(b.entry_id), b.error)
    return out


class _Instruments:
    """The consumer's metrics (meter "roomstream.consumer"), shared by every consumer of a
    process: dead letters and handler failures per group, and whether a group is stuck."""

    def __init__(self) -> None:
        m = meter("roomstream.consumer")
        self.dead_letters = m.create_counter(
            "roomstream_consumer_dead_letters",
            description="Log entries dead-lettered (acknowledged unhandled), by group",
        )
        self.failures = m.create_counter(
            "roomstream_consumer_handler_failures",
            description="Failed handler calls, by group and kind (transient / entry)",
        )
        self.consumers: weakref.WeakSet[LogConsumer] = weakref.WeakSet()
        m.create_observable_gauge(
            "roomstream_consumer_stuck",
            callbacks=[self._stuck],
            description="1 while a group's current batch has been unfinished longer than the bound",
        )

    def _stuck(self, options: CallbackOptions) -> Iterable[Observation]:
        for consumer in list(self.consumers):
            yield Observation(1 if consumer.stuck_reason() else 0, {"group": consumer.group})


@cache
def _instruments() -> _Instruments:
    return _Instruments()


def _redis_down(exc: BaseException) -> bool:
    return isinstance(exc, REDIS_DOWN_ERRORS)


async def _raw_parser(message: Any) -> StreamMessage[Any]:
    """FastStream `parser`: wrap the raw read (ids + field dicts) without touching the entries."""
    return StreamMessage(raw_message=message, body=b"", correlation_id="-")


async def _raw_decoder(msg: StreamMessage[Any]) -> Any:
    """FastStream `decoder`: the handler's body is the raw read itself."""
    return msg.raw_message


READ_TIMEOUT_MARGIN_S = 5.0
"""The broker's socket timeout is `poll_ms` plus this. Its clients only run the blocking reads,
and redis-py's default socket timeout (5 s) would end every read that blocks longer with a
TimeoutError, after which FastStream waits 5 s before it reads that shard again."""


def _reading(settings: CommonSettings, name: str, given: int | None) -> Any:
    """A read setting of the consumer: `given`, else the service's `ConsumerSettings` field,
    else that field's default."""
    if given is not None:
        return given
    if isinstance(settings, ConsumerSettings):
        return getattr(settings, name)
    return ConsumerSettings.model_fields[name].default


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
        poll_ms: int | None = None,
        reclaim_idle_ms: int | None = None,
        reclaim_interval_ms: int | None = None,
        max_backoff_s: float = 5.0,
        on_dead_letter: DeadLetterHook | None = None,
        probe: Probe | None = None,
        max_attempts: int | None = None,
        stuck_after_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.batch_size = batch_size
        # Given here, else the service's `ConsumerSettings`, else their defaults.
        self.poll_ms: int = _reading(settings, "poll_ms", poll_ms)
        self.reclaim_idle_ms: int = _reading(settings, "reclaim_idle_ms", reclaim_idle_ms)
        interval_ms = _reading(settings, "reclaim_interval_ms", reclaim_interval_ms)
        self.reclaim_interval_s = (interval_ms or max(self.reclaim_idle_ms // 2, 1)) / 1000
        """Time between two reclaim passes (default: half of `reclaim_idle_ms`)."""
        self.max_backoff_s = max_backoff_s
        self.on_dead_letter = on_dead_letter
        """Runs before an entry is dead-lettered (e.g. record its seq as skipped)."""
        self.probe = probe
        """Raises while this service's dependencies are away (default: Redis PING)."""
        self.max_attempts = max_attempts or settings.consumer_max_attempts
        self.stuck_after_s = stuck_after_s or settings.consumer_stuck_after_s
        self.streams = settings.keys.all_logs()
        keys = settings.keys
        self._dead_keys = {
            s: (
                keys.dead_letters(keys.shard_of_log(s)),
                keys.dead_letter_counts(keys.shard_of_log(s)),
            )
            for s in self.streams
        }
        self._busy: dict[object, tuple[str, float, int]] = {}
        """batch → (stream, monotonic start, entries) of each batch being handled."""
        self._last_error: dict[object, str] = {}
        """batch → its latest failure."""
        self._instruments = _instruments()
        self._instruments.consumers.add(self)
        broker_cls = RedisClusterBroker if settings.redis_cluster else RedisBroker
        # FastStream's access lines ("Received" / "Processed") at DEBUG, its errors through the
        # project's JSON logging as one line each (no traceback).
        self.broker: RedisBroker = broker_cls(
            settings.redis_url,
            logger=tame_faststream_logging(),
            log_level=logging.DEBUG,
            socket_timeout=self.poll_ms / 1000 + READ_TIMEOUT_MARGIN_S,
        )
        self._stopping = False
        self._broker_started = False
        self._reclaimer: asyncio.Task[None] | None = None
        self._reclaiming = False
        """Whether the reclaim job is in a pass (then `stop()` lets it finish its batch)."""
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

        async def on_batch(raw: Any) -> None:
            await self._handle_raw(stream, raw["message_ids"], raw["data"])

        self.broker.subscriber(
            stream=live, ack_policy=AckPolicy.MANUAL, parser=_raw_parser, decoder=_raw_decoder
        )(on_batch)

    # -- reclaim -----------------------------------------------------------------------------

    async def reclaim_once(self) -> int:
        """One reclaim pass: `XAUTOCLAIM` every shard's entries pending longer than
        `reclaim_idle_ms` (a dead consumer's, or a slow batch's of our own) and handle them,
        leaving those a batch of this process is still handling to that batch. Returns how many
        entries were handled."""
        total = 0
        for stream in self.streams:
            if self._stopping:
                break
            cursor: bytes | str = "0-0"
            while not self._stopping:
                reply: Any = await self.redis.xautoclaim(
                    stream,
                    self.group,
                    self.consumer,
                    self.reclaim_idle_ms,
                    start_id=cursor,
                    count=self.batch_size,
                )
                cursor, claimed = reply[0], reply[1]
                total += await self._handle_claimed(stream, claimed)
                if text(cursor) == "0-0":
                    break
        return total

    async def _handle_claimed(self, stream: str, claimed: Sequence[Any]) -> int:
        inflight = self._inflight[stream]
        pairs = [(i, d) for i, d in claimed if i not in inflight]
        # Redis < 7 returns an entry deleted (trimmed) meanwhile with no fields: nothing to do.
        gone = [i for i, d in pairs if d is None]
        if gone:
            await self._ack(stream, gone)
        pairs = [(i, d) for i, d in pairs if d is not None]
        if not pairs:
            return 0
        ids = [i for i, _ in pairs]
        log.info("reclaimed %d pending entries of %s", len(ids), stream)
        await self._handle_raw(stream, ids, [d for _, d in pairs])
        return len(ids)

    async def _reclaim_forever(self) -> None:
        """`reclaim_once` every `reclaim_interval_s` until stopped; a failed pass (Redis away) is
        logged and the next one runs anyway."""
        while not self._stopping:
            self._reclaiming = True
            try:
                await self.reclaim_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._stopping:
                    log.warning(
                        "consumer %s: reclaim pass failed: %s", self.group, describe(exc, 300)
                    )
            finally:
                self._reclaiming = False
            if self._stopping:
                return
            await asyncio.sleep(self.reclaim_interval_s)

    async def _handle_raw(self, stream: str, ids: Sequence[bytes], data: Sequence[Any]) -> None:
        inflight = self._inflight.setdefault(stream, set())
        inflight.update(ids)
        token = object()  # the live and the reclaim subscriber of a stream may both be busy
        self._busy[token] = (stream, time.monotonic(), len(ids))
        try:
            entries, undecodable = split_entries(stream, list(zip(ids, data, strict=True)))
            for bad in undecodable:
                await self._dead_letter(stream, text(bad.entry_id), bad.fields, bad.error, None)
            if entries:
                await self._process(stream, entries, token)
            await self._ack(stream, ids)
        finally:
            inflight.difference_update(ids)
            self._busy.pop(token, None)
            self._last_error.pop(token, None)

    # -- processing --------------------------------------------------------------------------

    async def _process(self, stream: str, entries: Sequence[LogEntry], token: object) -> None:
        """Handle `entries`, isolating and dead-lettering any entry that can never succeed."""
        backoff = Backoff(0.1, self.max_backoff_s)
        attempts = 0
        while True:
            try:
                await self.handler(entries)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    raise
                failure = exc
            transient = is_transient(failure)
            self._last_error[token] = describe(failure, 200)
            self._instruments.failures.add(
                1, {"group": self.group, "kind": "transient" if transient else "entry"}
            )
            if not transient and len(entries) > 1:
                # Isolate: each half on its own, in order (handlers are idempotent).
                mid = len(entries) // 2
                await self._process(stream, entries[:mid], token)
                await self._process(stream, entries[mid:], token)
                return
            if not transient:
                attempts += 1
                if (is_data_error(failure) or attempts >= self.max_attempts) and (
                    await self._dependencies_up()
                ):
                    entry = entries[0]
                    await self._dead_letter(
                        stream, entry.entry_id, entry.fields, describe(failure), entry, failure
                    )
                    return
            delay = backoff.next_delay()
            log.warning(
                "handler failed on %d entries of %s (%s); retrying in %.1fs",
                len(entries),
                stream,
                describe(failure, 300),
                delay,
                extra={"group": self.group, "transient": transient},
            )
            await asyncio.sleep(delay)

    async def _dependencies_up(self) -> bool:
        """Whether this service's dependencies answer (then a failure is the entry's own)."""
        try:
            await asyncio.wait_for(self.probe() if self.probe else self.redis.ping(), 2.0)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            return False

    async def _dead_letter(
        self,
        stream: str,
        entry_id: str,
        fields: Any,
        error: str,
        entry: LogEntry | None,
        exc: BaseException | None = None,
    ) -> None:
        """Record one entry in its shard's dead-letter stream, count it and acknowledge it (one
        step), after the service's hook; retried while Redis (or the hook's store) is away."""
        if entry is not None and self.on_dead_letter is not None:
            hook = self.on_dead_letter
            try:
                await self._retry(
                    lambda: hook(entry, exc or RuntimeError(error)),
                    "dead-letter hook",
                    is_transient,
                )
            except asyncio.CancelledError:
                raise
            except Exception as hook_exc:
                if self._stopping:
                    raise
                log.error(
                    "dead-letter hook failed on %s %s: %s", stream, entry_id, describe(hook_exc)
                )
        dead_key, count_key = self._dead_keys[stream]
        record = dead_letter_record(
            stream, entry_id, self.group, self.consumer, fields, error, now_ms()
        )

        async def record_and_ack() -> None:
            # One transaction on a single server (the keys share the shard's hash tag); a
            # cluster pipeline sends them in order (at least once).
            transaction = not isinstance(self.redis, RedisCluster)
            async with self.redis.pipeline(transaction=transaction) as pipe:
                pipe.xadd(dead_key, record, maxlen=DEFAULT_DEAD_LETTER_MAXLEN, approximate=True)
                pipe.hincrby(count_key, self.group, 1)
                pipe.xack(stream, self.group, entry_id)
                await pipe.execute()

        await self._retry(record_and_ack, "dead-letter record", _redis_down)
        self._instruments.dead_letters.add(1, {"group": self.group})
        log.error(
            "dead-lettered log entry %s %s of group %s: %s",
            stream,
            entry_id,
            self.group,
            error,
            extra={"stream": stream, "entry": entry_id, "group": self.group, "dead_key": dead_key},
        )

    def stuck_reason(self) -> str | None:
        """Why this consumer is stuck (a batch unfinished for longer than `stuck_after_s`)."""
        now = time.monotonic()
        for token, (stream, since, n) in list(self._busy.items()):
            age = now - since
            if age > self.stuck_after_s:
                error = self._last_error.get(token)
                return (
                    f"group {self.group}: a batch of {n} entries of {stream} unfinished for "
                    f"{age:.0f}s" + (f" (last error {error})" if error else "")
                )
        return None

    async def consumer_progress(self) -> None:
        """Readiness check: raises while the consumer is stuck."""
        reason = self.stuck_reason()
        if reason is not None:
            raise RuntimeError(reason)

    async def _ack(self, stream: str, ids: Sequence[bytes | str]) -> None:
        await self._retry(lambda: self.redis.xack(stream, self.group, *ids), "ack", _redis_down)

    async def _retry(
        self, op: Callable[[], Awaitable[Any]], what: str, retry_if: Callable[[BaseException], bool]
    ) -> Any:
        """`op` retried with this consumer's backoff while `retry_if` accepts its failure, until
        the consumer stops (`roomstream_kit.retry`)."""
        return await retry(
            op,
            what=f"consumer {self.group}: {what}",
            retry_if=retry_if,
            initial_s=0.1,
            max_s=self.max_backoff_s,
            stop_if=lambda: self._stopping,
            logger=log,
        )

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
                last = text(ids[-1])
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
        if not self._stopping:
            self._reclaimer = asyncio.create_task(
                self._reclaim_forever(), name=f"reclaim-{self.group}"
            )

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the subscribers; bounded, even if the broker was stopped while it was starting."""
        self._stopping = True
        if self._reclaimer is not None:
            if self._reclaiming:  # it ends after the batch it is handling (bounded)
                await asyncio.wait({self._reclaimer}, timeout=timeout_s / 2)
            # Cancelled mid-batch, its entries stay pending (not acknowledged): at least once.
            await cancel_and_wait([self._reclaimer], timeout_s, f"consumer {self.group} reclaim")
        if not self._broker_started:
            return
        stopping = asyncio.ensure_future(self.broker.stop())
        done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
        if not done:
            log.warning("consumer %s did not stop within %.0f s", self.consumer, timeout_s)
            stopping.cancel()
        elif stopping.exception() is not None:
            log.warning("consumer %s stop failed: %s", self.consumer, stopping.exception())
