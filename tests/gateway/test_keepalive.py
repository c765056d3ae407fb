"""The gateway-wide keepalive (`keepalive.Keepalive`): one timer pings every socket; a peer that
stops answering pings is closed (1011) and its `disconnected` is appended, while sockets that
answer stay open. Short ping settings through the environment bound every wait."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import threading
import time
from typing import Any

import uvloop
from roomstream_gateway.handshake import GatewayConnection
from roomstream_gateway.keepalive import PING_FRAME, Keepalive, slot_count
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.sync.client import connect as sync_connect

from tests.conftest import make_token
from tests.gateway.helpers import client, close_code, log_events, poll, request

GATEWAY = "roomstream_gateway"
FAST_KEEPALIVE = {
    "ROOMSTREAM_PING_INTERVAL_S": "0.4",
    "ROOMSTREAM_PING_TIMEOUT_S": "0.4",
    "ROOMSTREAM_KEEPALIVE_TICK_S": "0.1",
    "ROOMSTREAM_CLOSE_TIMEOUT_S": "0.5",
}


async def _disconnected(redis: Any, namespace: str, conn: str) -> dict[str, Any] | None:
    for event in await log_events(redis, namespace):
        if event["kind"] == "disconnected" and event["conn"] == conn:
            return event
    return None


async def _raw_handshake(host: str, port: int, user: str) -> tuple[Any, Any]:
    """A TCP connection that completes the WebSocket handshake and then never reads again."""
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {make_token(user)}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _welcome_conn(redis: Any, namespace: str, user: str) -> str:
    """The conn id of `user`'s socket, from its `connected` event (the raw client reads no
    welcome)."""
    found: list[str] = []

    async def connected() -> bool:
        found[:] = [
            e["conn"]
            for e in await log_events(redis, namespace)
            if e["kind"] == "connected" and e["user"] == user
        ]
        return bool(found)

    await poll(connected)
    return found[0]


async def test_a_peer_that_never_reads_is_closed_and_disconnected(cluster, namespace, redis_client):
    """The raw socket completed its handshake and then read nothing: no pong ever. It is closed
    (its TCP connection ends) and `disconnected` is appended; a live socket on the same gateway,
    which answers the pings, stays open through many ping intervals."""
    gw = cluster.gateway("gw-ka", FAST_KEEPALIVE)
    live, welcome = await client(gw.ws_url, "alive")
    assert welcome["heartbeat"] == 0.4  # still the ping interval
    reader, writer = await _raw_handshake("127.0.0.1", gw.port, "mute")
    try:
        conn = await _welcome_conn(redis_client, namespace, "mute")

        async def gone() -> bool:
            return await _disconnected(redis_client, namespace, conn) is not None

        await poll(gone)
        # The server side dropped the connection: reading reaches EOF (or a reset).
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(30):
                while await reader.read(65536):
                    pass
        # The live socket was pinged all along and answered: still open, still served.
        assert (await request(live, {"type": "ping"}))["type"] == "pong"
        assert await _disconnected(redis_client, namespace, welcome["conn"]) is None
    finally:
        writer.close()
        await live.close()


async def test_a_client_that_suppresses_its_pongs_is_closed_1011(cluster, namespace, redis_client):
    """A websockets client that reads every frame but never answers a ping: the gateway closes
    it with 1011 "keepalive ping timeout", as websockets' own keepalive did."""
    gw = cluster.gateway("gw-ka2", FAST_KEEPALIVE)
    ws, welcome = await client(gw.ws_url, "nopong")
    send_frame = ws.protocol.send_frame

    def no_pongs(frame: Frame) -> None:
        if frame.opcode is not Opcode.PONG:
            send_frame(frame)

    ws.protocol.send_frame = no_pongs  # type: ignore[method-assign]
    assert await close_code(ws) == 1011
    assert ws.protocol.close_rcvd is not None
    assert ws.protocol.close_rcvd.reason == "keepalive ping timeout"

    async def gone() -> bool:
        return await _disconnected(redis_client, namespace, welcome["conn"]) is not None

    await poll(gone)


async def test_a_socket_with_a_late_pong_is_not_pinged_twice(cluster, namespace, redis_client):
    """ping timeout > interval: a socket whose pong is outstanding at its next turn is not
    pinged again, and a pong that comes before the timeout keeps it open."""
    env = {**FAST_KEEPALIVE, "ROOMSTREAM_PING_INTERVAL_S": "0.2", "ROOMSTREAM_PING_TIMEOUT_S": "5"}
    gw = cluster.gateway("gw-ka3", env)
    ws, welcome = await client(gw.ws_url, "slowpong")
    send_frame = ws.protocol.send_frame
    held: list[Frame] = []

    def hold_pongs(frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            held.append(frame)
        else:
            send_frame(frame)

    ws.protocol.send_frame = hold_pongs  # type: ignore[method-assign]

    async def a_ping_came() -> bool:
        return bool(held)

    await poll(a_ping_came)
    await asyncio.sleep(1.0)  # five intervals, well inside the timeout
    assert len(held) == 1  # one ping outstanding: no second one
    ws.protocol.send_frame = send_frame  # type: ignore[method-assign]
    await ws.pong(held[0].data)  # the late answer
    assert (await request(ws, {"type": "ping"}))["type"] == "pong"
    assert await _disconnected(redis_client, namespace, welcome["conn"]) is None
    await ws.close()


async def test_slots_spread_sockets_and_keep_the_interval_exact():
    assert slot_count(20.0, 1.0) == 20
    assert slot_count(0.4, 1.0) == 1  # never zero
    assert slot_count(1.0, 0.3) == 4
    ka = Keepalive(1.0, 1.0, 0.3)
    assert len(ka.slots) == 4 and ka.tick_s == 0.25

    class Fake:
        ka_slot: dict[Any, None] | None = None
        ka_sent = 0.0
        leave_keepalive = GatewayConnection.leave_keepalive

        def __init__(self, lost: bool = False) -> None:
            self.connection_lost_waiter = asyncio.get_running_loop().create_future()
            if lost:
                self.connection_lost_waiter.set_result(None)

    conns = [Fake() for _ in range(10)]
    for c in conns:
        ka.add(c)  # type: ignore[arg-type]
    assert sorted(len(s) for s in ka.slots) == [2, 2, 3, 3]  # a burst spreads over every tick
    lost = Fake(lost=True)
    ka.add(lost)  # type: ignore[arg-type]  # lost before its handler ran: not tracked (no leak)
    assert lost.ka_slot is None and len(ka) == 10
    for c in conns[:5]:
        c.leave_keepalive()  # type: ignore[arg-type]
        c.leave_keepalive()  # type: ignore[arg-type]  # twice is harmless
    assert len(ka) == 5 and all(c.ka_slot is None for c in conns[:5])
    assert Frame(Opcode.PING, b"").serialize(mask=False) == PING_FRAME


class _StallAfterFirstPing(Keepalive):
    """Blocks the event loop once, right after its first ping went out, for longer than the
    ping timeout (a long callback, a full collection)."""

    stalled = False

    def _ping_slot(self, now: float) -> None:
        super()._ping_slot(now)
        if self._waiting and not self.stalled:
            self.stalled = True
            time.sleep(1.0)  # the client's thread answers meanwhile; the pong waits unread


def test_a_stalled_loop_does_not_close_sockets_that_answered():
    """When the loop comes back, its due check must not run before the pongs that arrived
    meanwhile are read: the socket that answered stays open. On uvloop (the gateway's loop),
    libuv runs due timers before it polls the sockets, so this needs the check's read turn."""
    uvloop.run(asyncio.wait_for(_stalled_loop(), 30))


async def _stalled_loop() -> None:
    ka = _StallAfterFirstPing(0.3, 0.3, 0.1)
    conns: list[ServerConnection] = []

    async def handler(conn: ServerConnection) -> None:
        ka.add(conn)  # type: ignore[arg-type]
        conns.append(conn)
        await conn.wait_closed()

    async with serve(
        handler, "127.0.0.1", 0, ping_interval=None, create_connection=GatewayConnection
    ) as server:
        port = server.sockets[0].getsockname()[1]
        ka.start()
        # A sync client answers pings from its own thread, whatever this loop does.
        done = threading.Event()
        client_thread = threading.Thread(
            target=_answering_client, args=(f"ws://127.0.0.1:{port}/", done), daemon=True
        )
        client_thread.start()
        try:

            async def stalled() -> bool:
                return ka.stalled

            await poll(stalled)
            await asyncio.sleep(1.0)  # three more intervals, each pinged and answered
            assert conns[0].protocol.state is OPEN
            assert len(ka) == 1
        finally:
            ka.stop()
            done.set()
            await asyncio.to_thread(client_thread.join, 10)


def _answering_client(url: str, done: threading.Event) -> None:
    with sync_connect(url):
        done.wait(30)
