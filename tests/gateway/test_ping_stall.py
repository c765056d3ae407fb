"""The pub/sub PING (`Router._watch`, ROOMSTREAM_PUBSUB_PING_S) under a stalled event loop: a
PONG that arrived while the loop was blocked (a long GC, a CPU-bound burst) is read before the
connection is judged silent, on uvloop (the gateway's loop, which runs due timers before it
polls the sockets) as on asyncio's own."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop
from roomstream_gateway.app import Gateway
from roomstream_gateway.settings import GatewaySettings

from tests.conftest import REDIS_URL

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
