"""Rate limiting (rate_limited, then 1008) and slow readers (1013), with others still served."""

from __future__ import annotations

import asyncio

import httpx
import orjson

from tests.gateway.helpers import (
    client,
    close_code,
    create_room,
    events_of,
    poll,
    recv,
    request,
)

GATEWAY = "roomstream_gateway"


async def test_rate_limit_then_policy_close(cluster, namespace, redis_client):
    await create_room(redis_client, namespace, "main", "olga", members=["spammer"])
    gw = cluster.start(
        GATEWAY,
        env={
            "ROOMSTREAM_SEND_RATE_PER_S": "0.2",
            "ROOMSTREAM_SEND_BURST": "3",
            "ROOMSTREAM_RATE_LIMIT_CLOSE_AFTER": "5",
        },
    )
    observer, _ = await client(gw.ws_url, "olga")
    spammer, _ = await client(gw.ws_url, "spammer")
    for i in range(3):
        ack = await request(spammer, {"type": "send", "room": "main", "text": "s", "id": f"s{i}"})
        assert ack["type"] == "ack"
    limited = await request(spammer, {"type": "send", "room": "main", "text": "s", "id": "s3"})
    assert limited["code"] == "rate_limited"
    assert isinstance(limited["retry_after"], int) and limited["retry_after"] > 0
    # Non-budgeted commands still work.
    assert (await request(spammer, {"type": "ping"}))["type"] == "pong"
    # The observer (another user, its own budget) is served.
    ok = await request(observer, {"type": "send", "room": "main", "text": "hi", "id": "o1"})
    assert ok["type"] == "ack"
    # Keep sending past the threshold of consecutive rate-limited commands: 1008.
    for i in range(4, 10):
        await spammer.send(
            orjson.dumps({"type": "send", "room": "main", "text": "s", "id": f"s{i}"}).decode()
        )
    assert await close_code(spammer) == 1008
    ok = await request(observer, {"type": "send", "room": "main", "text": "hi", "id": "o2"})
    assert ok["type"] == "ack"
    async with httpx.AsyncClient(base_url=gw.url) as http:
        text = (await http.get("/metrics")).text
    assert "roomstream_gateway_rate_limited_total" in text
    await observer.close()


async def test_slow_reader_is_closed_1013_while_others_receive_everything(
    cluster, namespace, redis_client
):
    await create_room(redis_client, namespace, "main", "olga", members=["fast", "slow"])
    gw = cluster.start(
        GATEWAY,
        env={
            "ROOMSTREAM_MAX_BUFFER_BYTES": str(64 * 1024),
            "ROOMSTREAM_SLOW_CLOSE_TIMEOUT_S": "60",
            "ROOMSTREAM_SEND_RATE_PER_S": "100000",
            "ROOMSTREAM_SEND_BURST": "100000",
        },
    )
    sender, _ = await client(gw.ws_url, "olga")
    fast, _ = await client(gw.ws_url, "fast")
    # A tiny receive buffer and read queue so the gateway's buffer fills quickly.
    slow, _ = await client(gw.ws_url, "slow", max_queue=1)

    async def slow_closed() -> bool:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            text = (await http.get("/metrics")).text
        return any(
            line.startswith("roomstream_gateway_slow_consumer_disconnects_total")
            and float(line.split()[-1]) >= 1
            for line in text.splitlines()
        )

    text = "y" * 7000
    received = 0
    sent = 0
    # Send in rounds (the fast client reads each round) until the slow reader is cut off.
    for _round in range(200):
        for _ in range(50):
            await sender.send(
                orjson.dumps(
                    {"type": "send", "room": "main", "text": text, "id": f"m{sent}"}
                ).decode()
            )
            sent += 1
        for _ in range(100):  # the sender is a member: its acks and the events
            await recv(sender)
        got = await events_of(fast, "main", 50)
        assert [e["seq"] for e in got] == list(range(2 + received, 2 + received + 50))
        received += 50
        if await slow_closed():
            break
    else:
        raise AssertionError("the slow reader was never closed")
    await poll(slow_closed)
    # The slow client now reads what it had, then the 1013 close.
    assert await close_code(slow) == 1013
    # The others keep receiving everything.
    ack = None
    while ack is None or ack.get("type") != "ack":
        ack = await request(sender, {"type": "send", "room": "main", "text": "last", "id": "last"})
    (ev,) = await events_of(fast, "main", 1)
    assert ev["data"]["text"] == "last" and ev["seq"] == received + 2
    await asyncio.gather(sender.close(), fast.close())
