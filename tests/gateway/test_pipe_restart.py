"""The gateway's pipelined connection (`AppendPipe.batch`, the connect path's reads) through a
restart of a redis-server of the test's own during a burst: every batch gets its own replies or
fails with a ConnectionError (`unavailable`, LOADING included), none hangs, and batches succeed
again once Redis is back."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError
from roomstream_gateway.pipeline import AppendPipe

from tests.support.redis_server import OwnRedis
from tests.support.waits import until

KEYS = 50


async def test_a_restart_during_a_burst_of_batches(own_redis: OwnRedis) -> None:
    c = own_redis.client()
    for i in range(KEYS):
        c.set(f"k{i}", f"v{i}")
    c.hset("h", "f", "1")
    c.close()
    pipe = AppendPipe(own_redis.url)
    wrong: list[str] = []
    ok = failed = 0
    stop = asyncio.Event()

    async def worker(w: int) -> None:
        nonlocal ok, failed
        n = 0
        while not stop.is_set():
            n += 1
            a, b = (w + n) % KEYS, (w * 7 + n) % KEYS
            try:
                got = await asyncio.wait_for(
                    pipe.batch([("GET", f"k{a}"), ("HGET", "h", "f"), ("GET", f"k{b}")]), 15
                )
            except RedisConnectionError:
                failed += 1
                await asyncio.sleep(0.01)
                continue
            if got != [f"v{a}".encode(), b"1", f"v{b}".encode()]:
                wrong.append(f"{a},{b}: {got!r}")
            ok += 1
            await asyncio.sleep(0)

    tasks = [asyncio.ensure_future(worker(w)) for w in range(100)]
    try:
        await asyncio.sleep(0.5)
        before = ok
        await asyncio.to_thread(own_redis.stop)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(own_redis.start, wait_loaded=False)
        after = ok
        await until(lambda: ok >= after + 500, "batches succeed again after the restart")
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        pipe.close()
    assert wrong == []
    assert before > 0 and failed > 0
