"""The WebSocket listener queues a connect burst (`ROOMSTREAM_LISTEN_BACKLOG`).

While a gateway is too busy to accept (a reconnect burst: thousands of clients back at once),
the kernel completes the TCP handshakes and queues them, up to the listener's backlog; past it,
SYNs are dropped and each client waits for its SYN retransmission (1 s, 3 s, 7 s, ...) with the
gateway idle. asyncio's default of 100 made 10,000 reconnects take 112 s instead of 32 s
(docs/benchmarks.md). A SIGSTOPped gateway stands in for a busy one: nothing is accepted, so how
many connects complete is the queue's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

from tests.gateway.helpers import client

GATEWAY = "roomstream_gateway"
BURST = 300
CONNECT_WITHIN_S = 2.5
"""Longer than the first SYN retransmission (1 s): a dropped SYN is retried once, and still
finds the queue full."""


async def _connect_burst(port: int, n: int) -> tuple[int, list[socket.socket]]:
    """Open `n` TCP connections at once; → how many completed within the bound, and the sockets."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []

    async def one() -> bool:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        socks.append(sock)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), CONNECT_WITHIN_S)
            return True
        except (TimeoutError, OSError):
            return False

    done = await asyncio.gather(*(one() for _ in range(n)))
    return sum(done), socks


async def _queued_while_stopped(gw) -> int:
    os.kill(gw.proc.pid, signal.SIGSTOP)
    socks: list[socket.socket] = []
    try:
        established, socks = await _connect_burst(gw.port, BURST)
    finally:
        os.kill(gw.proc.pid, signal.SIGCONT)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
    return established


async def test_a_burst_waits_in_the_accept_queue_of_a_busy_gateway(cluster) -> None:
    default = cluster.start(GATEWAY)
    small = cluster.start(GATEWAY, env={"ROOMSTREAM_LISTEN_BACKLOG": "50"})

    # The default backlog holds the whole burst; a small one (asyncio's default is 100) holds
    # its size and drops the rest (the control: this test sees the difference).
    assert await _queued_while_stopped(default) == BURST
    assert await _queued_while_stopped(small) <= 60

    # Both serve again once they run: the queued connections did not break the listener.
    for gw in (default, small):
        ws, welcome = await client(gw.ws_url, "alice")
        assert welcome["type"] == "welcome"
        await ws.close()
