"""Nothing is lost: 10,000 messages over two gateways while the history service is SIGKILLed and restarted twice
and Postgres is cut off for 10 s; afterwards Postgres holds each message exactly once, with the
seq its sender was acknowledged."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from roomstream_kit.eventlog import EventLog

from tests.conftest import Cluster
from tests.history.helpers import create_room, wait_for
from tests.history.wsclient import WsClient
from tests.support.proxy import CuttableProxy

TOTAL = 10_000
ROOMS = [f"room-{i}" for i in range(10)]
SENDERS = 20
"""Sockets, half on each gateway; each keeps several sends in flight (pipelined acks)."""
IN_FLIGHT = 4
NO_RATE_LIMIT = {"ROOMSTREAM_SEND_RATE_PER_S": "100000", "ROOMSTREAM_SEND_BURST": "100000"}
RATE = 600.0
"""Messages per second overall, so the crashes and the outage happen mid-stream."""


async def test_no_message_lost_through_crashes_and_postgres_outage(
    cluster: Cluster, eventlog: EventLog, database_url: str
) -> None:
    proxy, via_proxy = await CuttableProxy.before_postgres(database_url)
    env = {
        "DATABASE_URL": via_proxy,
        "ROOMSTREAM_NODE_ID": "history-durability",
        "ROOMSTREAM_RECLAIM_IDLE_MS": "1000",
        "ROOMSTREAM_BATCH_SIZE": "200",
    }
    # Started from a thread: the proxy runs on this event loop and must keep serving meanwhile.
    hist = await asyncio.to_thread(cluster.start, "roomstream_history", name="history", env=env)
    users = [f"user-{k}" for k in range(SENDERS)]
    for room in ROOMS:
        await create_room(eventlog, room, "alice", members=users)
    gateways = [
        await asyncio.to_thread(
            cluster.start, "roomstream_gateway", name=f"gw{i}", env=NO_RATE_LIMIT
        )
        for i in range(2)
    ]
    clients = [await WsClient.connect(gateways[k % 2].ws_url, user) for k, user in enumerate(users)]

    acked: dict[str, tuple[str, int]] = {}  # client text → (room, seq)
    counter = iter(range(TOTAL))
    started = time.monotonic()

    async def sender(client: WsClient) -> None:
        for i in counter:
            # Pace the whole run so the faults below land in the middle of the traffic.
            delay = started + i / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            room = ROOMS[i % len(ROOMS)]
            text = f"msg-{i}"
            ack = await client.call("send", room=room, text=text, id=text)
            assert ack["type"] == "ack", ack
            acked[text] = (room, ack["seq"])

    senders = [asyncio.create_task(sender(c)) for c in clients for _ in range(IN_FLIGHT)]

    async def at(count: int) -> None:
        await wait_for(lambda: _ready(len(acked) >= count), deadline_s=120, what=f"{count} sent")

    await at(1500)
    hist.kill()  # crash 1: in-flight batches stay pending, are drained at restart
    await asyncio.sleep(0.5)
    await asyncio.to_thread(hist.start, 120)
    await at(4000)
    await proxy.cut()  # Postgres unreachable for 10 s while messages keep coming
    await asyncio.sleep(10)
    await proxy.restore()
    await at(6500)
    hist.kill()  # crash 2, right after the outage (catch-up in progress)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(hist.start, 120)
    await asyncio.gather(*senders)
    assert len(acked) == TOTAL
    for c in clients:
        await c.close()

    conn = await asyncpg.connect(database_url)
    try:

        async def all_persisted() -> bool:
            n = await conn.fetchval("SELECT count(*) FROM history_events WHERE kind = 'message'")
            return int(n) >= TOTAL

        await wait_for(all_persisted, deadline_s=180, what="all messages persisted")
        rows = await conn.fetch(
            "SELECT room, seq, data->>'text' AS text FROM history_events WHERE kind = 'message'"
        )
    finally:
        await conn.close()
        await proxy.cut()
    stored = {r["text"]: (r["room"], r["seq"]) for r in rows}
    assert len(rows) == TOTAL  # each message once
    assert stored == acked  # with the seq its sender was acknowledged
    assert hist.running


async def _ready(value: bool) -> bool:
    return value
