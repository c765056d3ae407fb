"""The pub/sub PING (`Router._watch`, ROOMSTREAM_PUBSUB_PING_S) under a stalled event loop: a
PONG that arrived while the loop was blocked (a long GC, a CPU-bound burst) is read before the
connection is judged silent, on uvloop (the gateway's loop, which runs due timers before it
polls the sockets) as on asyncio's own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from roomstream_gateway.app import Gateway
from roomstream_gateway.settings import GatewaySettings

from tests.conftest import REDIS_URL
from tests.support.redis_server import OwnRedis, require_redis_server
from tests.support.waits import until

PING_S = 0.3


def _block(seconds: float) -> None:
    """Hold the event loop (what a CPU-bound burst does)."""
    time.sleep(seconds)


async def _stalls_do_not_drop(namespace: str) -> int:
    settings = GatewaySettings(
        redis_url=REDIS_URL, namespace=namespace, port=0, delivery="routed", pubsub_ping_s=PING_S
    )
    gw = Gateway(settings)
    router = gw.router
    assert router is not None
    await router.start()
    try:
        link = router.control_link
        assert link is not None
        stalls = 0
        deadline = time.monotonic() + 20
        while stalls < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
            if link.pinged:  # the PING just went out; its PONG is on its way
                _block(PING_S * 2)  # the loop blocked past the next ping round
                stalls += 1
                await asyncio.sleep(0.05)
        assert stalls == 3
        await asyncio.sleep(PING_S * 2)
        return 0 if router.control_link is link and not link.lost else 1
    finally:
        router.stop()
        await gw.redis.aclose()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_loop_stall_is_not_a_silent_connection(namespace: str, loop: str) -> None:
    if loop == "uvloop":
        dropped = uvloop.run(_stalls_do_not_drop(namespace))
    else:
        dropped = asyncio.run(_stalls_do_not_drop(namespace))
    assert dropped == 0


@pytest.fixture
def loading_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """Own redis-server that takes seconds to load its data after a restart (as in
    test_redis_try_again)."""
    require_redis_server()
    server = OwnRedis(
        tmp_path / "redis",
        ["--key-load-delay", "50", "--loading-process-events-interval-bytes", "1024"],
    )
    server.dir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_ping_answered_with_loading_is_an_answer(loading_redis: OwnRedis) -> None:
    """Redis answers PING with -LOADING while it loads its data set after a restart (SUBSCRIBE
    works meanwhile): the connection is alive, so it is not dropped (each drop resubscribed,
    filled and reconciled, every two ping rounds for as long as the load lasted)."""
    await asyncio.to_thread(loading_redis.fill, 60_000)
    await asyncio.to_thread(loading_redis.stop)
    await asyncio.to_thread(loading_redis.start, wait_loaded=False)
    assert loading_redis.state() == "loading"
    settings = GatewaySettings(
        redis_url=loading_redis.url, namespace="lp", port=0, delivery="routed", pubsub_ping_s=0.3
    )
    gw = Gateway(settings)
    router = gw.router
    assert router is not None
    try:
        await asyncio.wait_for(router.start(), 10)
        link = router.control_link
        assert link is not None
        await asyncio.sleep(1.5)  # 5 ping rounds, each answered with LOADING
        assert loading_redis.state() == "loading", "the load ended too soon for this test"
        assert router.control_link is link and not link.lost
        await until(lambda: loading_redis.state() == "ready", "the load's end", timeout_s=60)
        # Subscribed all along: a control message published after the load reaches it.
        assert await gw.redis.publish(router.control_channel, b"{}") == 1
        assert router.control_link is link and not link.lost
    finally:
        router.stop()
        await gw.redis.aclose()


async def test_a_link_behind_on_its_data_is_not_silent(namespace: str) -> None:
    """A busy loop (each iteration held 30 ms) draining several MB that Redis pushed on the
    control channel: the PONG waits behind that data for longer than a ping round, but the
    connection is delivering all along, so it is not dropped (a drop would add a resubscribe,
    fills and a reconcile to a loop that is already behind)."""
    settings = GatewaySettings(
        redis_url=REDIS_URL, namespace=namespace, port=0, delivery="routed", pubsub_ping_s=PING_S
    )
    gw = Gateway(settings)
    router = gw.router
    assert router is not None
    busy = True

    async def hog() -> None:
        while busy:
            _block(0.03)
            await asyncio.sleep(0)

    await router.start()
    hogging = asyncio.ensure_future(hog())
    try:
        link = router.control_link
        assert link is not None
        note = b"noise - " + b"x" * 4000  # a kind the router ignores
        async with gw.redis.pipeline(transaction=False) as pipe:
            for _ in range(1500):  # ~6 MB, under Redis's pub/sub output buffer limits
                pipe.publish(router.control_channel, note)
            await pipe.execute()
        await asyncio.sleep(PING_S * 8)
        assert router.control_link is link and not link.lost
    finally:
        busy = False
        await hogging
        router.stop()
        await gw.redis.aclose()
