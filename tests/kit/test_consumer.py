"""`LogConsumer`'s reading and reclaiming: a dead consumer's pending entries are taken over by the
consumer's own reclaim job (XAUTOCLAIM over every shard every `reclaim_interval_ms`), this
consumer's own pending entries are drained at start, an entry still being handled by a slow batch
is not handled a second time by the reclaim job, a long `poll_ms` does not delay delivery (a
blocked read returns as soon as an entry arrives) and `stop()` does not wait for a blocked read.
Real Redis, a real consumer group; the handlers are the tests' own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest
import redis.asyncio as aioredis
from roomstream_contracts.events import EventKind
from roomstream_contracts.ids import new_event_id
from roomstream_kit.consumer import LogConsumer, LogEntry
from roomstream_kit.eventlog import EventLog
from roomstream_kit.settings import ConsumerSettings

from tests.kit.test_dead_letters import redis, settings_of
from tests.support.events import envelope
from tests.support.waits import until

GROUP = "cstest"
ROOM = "reclaim-room"
__all__ = ["redis"]  # the fixture

LONG_POLL_MS = 120_000
"""Longer than any wait of these tests: an entry that arrives is handled because the blocked read
returned with it, not because the read timed out."""


async def append(redis: aioredis.Redis, namespace: str, n: int) -> list[str]:
    """`n` messages of one room; their event ids."""
    log = EventLog(redis, settings_of(namespace).keys)
    ids = []
    for i in range(n):
        env = envelope(EventKind.MESSAGE, ROOM, "ann", text=f"m{i}", client_id=new_event_id())
        await log.append(env)
        ids.append(env.id)
    return ids


async def read_unacked(redis: aioredis.Redis, namespace: str, consumer: str) -> int:
    """Read every shard's new entries as `consumer` and never acknowledge them (it then dies)."""
    keys = settings_of(namespace).keys
    n = 0
    for stream in keys.all_logs():
        reply = await redis.xreadgroup(GROUP, consumer, {stream: ">"}, count=100)
        n += len(reply[0][1]) if reply else 0
    return n


async def pending(redis: aioredis.Redis, namespace: str) -> int:
    total = 0
    for stream in settings_of(namespace).keys.all_logs():
        info = await redis.xpending(stream, GROUP)
        total += int(info["pending"])
    return total


def consumer_of(
    namespace: str,
    redis: aioredis.Redis,
    handler: Callable[[Sequence[LogEntry]], Awaitable[None]],
    **options: int,
) -> LogConsumer:
    return LogConsumer(
        settings_of(namespace),
        redis,
        group=GROUP,
        consumer="c1",
        handler=handler,
        max_backoff_s=0.2,
        **options,  # type: ignore[arg-type]
    )


async def test_a_dead_consumers_pending_entries_are_taken_over_by_the_reclaim_job(
    namespace: str, redis: aioredis.Redis
) -> None:
    seen: list[str] = []

    async def handle(batch: Sequence[LogEntry]) -> None:
        seen.extend(e.envelope.id for e in batch)

    consumer = consumer_of(
        namespace,
        redis,
        handle,
        poll_ms=LONG_POLL_MS,
        reclaim_idle_ms=300,
        reclaim_interval_ms=100,
    )
    await consumer.ensure_groups()
    ids = await append(redis, namespace, 5)
    assert await read_unacked(redis, namespace, "dead") == 5
    await consumer.start()
    try:
        await until(lambda: sorted(seen) == sorted(ids), "the dead consumer's entries handled")
        await until(lambda: _zero(pending(redis, namespace)), "the reclaimed entries acked")
        assert sorted(seen) == sorted(ids)  # each once: nothing else was pending
    finally:
        await consumer.stop()


async def _zero(n: Awaitable[int]) -> bool:
    return await n == 0


async def test_own_pending_entries_are_drained_at_start_before_new_ones(
    namespace: str, redis: aioredis.Redis
) -> None:
    seen: list[str] = []

    async def handle(batch: Sequence[LogEntry]) -> None:
        seen.extend(e.envelope.id for e in batch)

    consumer = consumer_of(namespace, redis, handle, poll_ms=LONG_POLL_MS, reclaim_idle_ms=600_000)
    await consumer.ensure_groups()
    old = await append(redis, namespace, 3)
    assert await read_unacked(redis, namespace, "c1") == 3  # this consumer's previous life
    await consumer.start()  # drains before it returns: no reclaim (idle 10 min) involved
    try:
        assert sorted(seen) == sorted(old)
        assert await pending(redis, namespace) == 0
        new = await append(redis, namespace, 2)
        await until(lambda: len(seen) == 5, "the new entries")
        assert sorted(seen[3:]) == sorted(new)
    finally:
        await consumer.stop()


async def test_a_long_poll_delivers_at_once_and_stop_does_not_wait_for_the_read(
    namespace: str, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def handle(batch: Sequence[LogEntry]) -> None:
        seen.extend(e.envelope.id for e in batch)

    consumer = consumer_of(namespace, redis, handle, poll_ms=LONG_POLL_MS)
    await consumer.start()
    # Blocked longer than redis-py's default socket timeout (5 s), which would have cut the
    # reads ("Message fetch error") and paused them for FastStream's 5 s backoff.
    await asyncio.sleep(6.0)
    ids = await append(redis, namespace, 1)
    await until(lambda: seen == ids, "the entry, from the blocked read")
    fetch_errors = [r for r in caplog.records if "fetch error" in r.getMessage()]
    assert fetch_errors == []
    await asyncio.sleep(0.3)  # blocked again
    # Bounded here so a stop that waited for the 120 s reads fails the test instead of hanging.
    await asyncio.wait_for(consumer.stop(timeout_s=5.0), 15.0)
    assert consumer.reclaim_interval_s == ConsumerSettings().reclaim_idle_ms / 2000


async def test_the_reclaim_job_leaves_an_entry_of_a_slow_batch_to_that_batch(
    namespace: str, redis: aioredis.Redis
) -> None:
    release = asyncio.Event()
    calls: list[list[str]] = []

    async def slow(batch: Sequence[LogEntry]) -> None:
        calls.append([e.envelope.id for e in batch])
        await release.wait()

    consumer = consumer_of(
        namespace, redis, slow, poll_ms=LONG_POLL_MS, reclaim_idle_ms=200, reclaim_interval_ms=50
    )
    await consumer.start()
    try:
        ids = await append(redis, namespace, 1)
        await until(lambda: len(calls) == 1, "the slow batch")
        await asyncio.sleep(0.6)  # idle > 200 ms: several reclaim passes claimed it meanwhile
        assert await consumer.reclaim_once() == 0
        assert calls == [ids]  # not handled a second time at once
        release.set()
        await until(lambda: _zero(pending(redis, namespace)), "the slow batch acked")
        assert calls == [ids]
    finally:
        release.set()
        await consumer.stop()


async def test_stop_during_a_reclaim_pass_is_bounded_and_leaves_its_entries_pending(
    namespace: str, redis: aioredis.Redis
) -> None:
    """A stop while the reclaim job handles a dead consumer's entries with a handler that does
    not return: bounded (the pass is cancelled after half the timeout), and the entries stay
    pending (never acknowledged unhandled: at least once)."""
    started = asyncio.Event()

    async def stuck(batch: Sequence[LogEntry]) -> None:
        started.set()
        await asyncio.Event().wait()

    consumer = consumer_of(
        namespace,
        redis,
        stuck,
        poll_ms=LONG_POLL_MS,
        reclaim_idle_ms=200,
        reclaim_interval_ms=50,
    )
    await consumer.ensure_groups()
    await append(redis, namespace, 3)
    assert await read_unacked(redis, namespace, "dead") == 3
    await consumer.start()
    try:
        await asyncio.wait_for(started.wait(), 10)  # the reclaim pass is in the handler
    finally:
        await asyncio.wait_for(consumer.stop(timeout_s=2.0), 10)
    assert await pending(redis, namespace) == 3
