"""`LogConsumer` against a Redis that stops answering (SIGSTOP of a redis-server of the test's
own): the blocked reads time out at `poll_ms` + the margin instead of hanging, consumption resumes
once Redis answers again, and `stop()` while Redis is stopped is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from roomstream_contracts.events import EventKind
from roomstream_contracts.ids import new_event_id
from roomstream_kit.consumer import LogConsumer, LogEntry
from roomstream_kit.eventlog import EventLog
from roomstream_kit.redis import connect
from roomstream_kit.settings import CommonSettings

from tests.support.events import envelope
from tests.support.redis_server import OwnRedis
from tests.support.waits import until


async def test_a_stopped_redis_then_answering_again(own_redis: OwnRedis) -> None:
    settings = CommonSettings(redis_url=own_redis.url, namespace="stall", shards=2)
    client = connect(settings)
    seen: list[str] = []

    async def handle(batch: Sequence[LogEntry]) -> None:
        seen.extend(e.envelope.id for e in batch)

    consumer = LogConsumer(
        settings,
        client,
        group="g",
        consumer="c1",
        handler=handle,
        poll_ms=500,
        reclaim_idle_ms=400,
        reclaim_interval_ms=200,
        max_backoff_s=0.2,
    )
    writer = aioredis.Redis.from_url(own_redis.url, socket_timeout=5)

    async def one() -> str:
        env = envelope(EventKind.MESSAGE, "r", "ann", text="m", client_id=new_event_id())
        await EventLog(writer, settings.keys).append(env)
        return env.id

    assert own_redis.proc is not None
    pid = own_redis.proc.pid
    try:
        await consumer.start()
        first = await one()
        await until(lambda: seen == [first], "before the stall")
        os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(8)  # past poll_ms + the socket timeout margin (5 s)
        os.kill(pid, signal.SIGCONT)
        second = await one()
        await until(lambda: seen == [first, second], "after the stall", timeout_s=30)

        os.kill(pid, signal.SIGSTOP)  # stop while Redis does not answer: bounded
        started = time.monotonic()
        await asyncio.wait_for(consumer.stop(timeout_s=4.0), 30)
        assert time.monotonic() - started < 30
    finally:
        os.kill(pid, signal.SIGCONT)
        await writer.aclose()
        await client.aclose()
