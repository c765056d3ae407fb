"""Graceful rolling restart under steady traffic, through the repo's load balancer.

Gateways are restarted one at a time: SIGTERM (the gateway closes every socket with 1012 and
exits 0), start it again on the same port with the same node id, wait until it is ready and the
balancer sends clients to it again, then the next one. Meanwhile several clients keep sending.
Afterwards every client has every acknowledged message exactly once, in seq order, and every send
was acknowledged (some after a retry with the same client message id).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from roomstream_client import Client
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Cluster, make_token
from tests.deploy.deployment import start_deployment
from tests.deploy.traffic import Chatter, check_exactly_once, create_public_room, wait_for

CLIENTS = 6


async def _lb_reaches(ws_url: str, node: str) -> bool:
    """Does a fresh connection through the balancer land on `node` (within a few tries)?"""
    for _ in range(4):
        client = Client(ws_url, make_token("probe"), connect_timeout=10)
        try:
            welcome = await client.connect()
            if welcome.node == node:
                return True
        finally:
            await client.close()
    return False


async def test_rolling_restart_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    deployment = start_deployment(cluster, tmp_path, with_lb=True)
    assert deployment.lb is not None
    lb_url = deployment.lb.ws_url
    try:
        await create_public_room(deployment.rooms.url, "lobby")
        chatters = [await Chatter(f"user{i}", [lb_url], "lobby").start() for i in range(CLIENTS)]
        assert {c.node for c in chatters} == {"gateway-1", "gateway-2"}

        stop = asyncio.Event()
        sent = [0] * CLIENTS

        async def steady(i: int, chatter: Chatter) -> None:
            while not stop.is_set():
                await chatter.send(sent[i])
                sent[i] += 1
                await asyncio.sleep(0.05)

        senders = [asyncio.create_task(steady(i, c)) for i, c in enumerate(chatters)]

        def acked() -> int:
            return sum(len(c.acked) for c in chatters)

        def acked_reaches(target: int) -> Callable[[], bool]:
            return lambda: acked() >= target

        def lb_reaches(node: str) -> Callable[[], Awaitable[bool]]:
            return lambda: _lb_reaches(lb_url, node)

        for gateway in deployment.gateways:
            node = gateway.name  # gateway-N = its node id
            progress = acked()
            await wait_for(acked_reaches(progress + 10), "traffic before the restart")
            # A socket of our own on this gateway sees the restart close code.
            async with connect(
                gateway.ws_url, additional_headers={"Authorization": f"Bearer {make_token('obs')}"}
            ) as observer:
                await observer.recv()  # welcome
                # in a thread: the clients keep sending and reading while it shuts down
                assert await asyncio.to_thread(gateway.terminate) == 0, gateway.tail()
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await observer.recv()
                assert observer.close_code == 1012
            progress = acked()
            await wait_for(acked_reaches(progress + 10), f"traffic while {node} is down")
            await asyncio.to_thread(gateway.start)
            await wait_for(lb_reaches(node), f"balancer sends to {node}")

        progress = acked()
        await wait_for(acked_reaches(progress + 10), "traffic after the restarts")
        stop.set()
        await asyncio.wait_for(asyncio.gather(*senders), timeout=120)
        # every send was acknowledged
        assert acked() == sum(sent)
        # both restarts moved clients: some client changed gateway at least once
        assert any(len(c.nodes) > 1 for c in chatters)
        last = max(seq for c in chatters for seq in c.acked.values())
        await wait_for(lambda: all(c.last_seq() >= last for c in chatters), "catch-up")
        check_exactly_once(chatters)
        for c in chatters:
            await c.close()
    finally:
        deployment.stop_lb()
