"""Replay past the recent buffer through the real history service, and the gateway riding out a
Redis outage (its own redis-server): `unavailable` meanwhile, nothing lost after."""

from __future__ import annotations

import asyncio
import time

import httpx
import redis.asyncio as aioredis

from tests.conftest import make_token, service_token
from tests.gateway.helpers import (
    client,
    create_room,
    events_of,
    keys,
    poll,
    request,
    send_acked,
)
from tests.support.redis_server import OwnRedis

GATEWAY = "roomstream_gateway"


async def test_replay_and_edit_past_the_recent_buffer_use_history(cluster, namespace, redis_client):
    await create_room(redis_client, namespace, "main", "alice", members=["bob"])
    history = cluster.start("roomstream_history")
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_HISTORY_URL": history.url})
    alice, _ = await client(gw.ws_url, "alice")
    for i in range(10):
        await send_acked(alice, "main", f"m{i}")  # seqs 2..11

    async def persisted() -> bool:
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {service_token()}"}
        ) as http:
            r = await http.get(f"{history.url}/rooms/main/messages", params={"after": 0})
        return r.status_code == 200 and any(e["seq"] == 11 for e in r.json()["events"])

    await poll(persisted)
    # Seqs 2..7 leave the recent buffer: they can only come from history now.
    await redis_client.xtrim(keys(namespace).recent("main"), minid="8-0", approximate=False)
    await alice.close()

    bob, welcome = await client(gw.ws_url, "bob")
    assert welcome["rooms"]["main"]["seq"] == 11
    joined = await request(bob, {"type": "join", "room": "main", "since": 1})
    assert (joined["recovered"], joined["missed"], joined["seq"]) == (True, 10, 11)
    replayed = await events_of(bob, "main", 10)
    assert [e["seq"] for e in replayed] == list(range(2, 12))
    assert [e["data"]["text"] for e in replayed] == [f"m{i}" for i in range(10)]

    # The history command is proxied to the history service.
    page = await request(bob, {"type": "history", "room": "main", "before": 6, "limit": 3})
    assert page["type"] == "history"
    assert [e["seq"] for e in page["events"]] == [3, 4, 5] and page["more"] is True

    # Editing a message that left the recent buffer: the author is checked against history.
    refused = await request(bob, {"type": "edit", "room": "main", "seq": 3, "text": "nope"})
    assert refused["code"] == "forbidden"
    alice, _ = await client(gw.ws_url, "alice")
    edited = await request(alice, {"type": "edit", "room": "main", "seq": 3, "text": "m1!"})
    assert edited["type"] == "ack" and edited["seq"] == 12
    (ev,) = await events_of(bob, "main", 1, kind="message_edited")
    assert ev["data"] == {"target_seq": 3, "text": "m1!"}
    await alice.close()
    await bob.close()


async def test_redis_outage_unavailable_then_recovers(cluster, namespace, tmp_path):
    # Our own redis-server, persisting every write (AOF) so that a restart keeps the log.
    server = OwnRedis(tmp_path, extra=["--appendfsync", "always"])
    server.start()
    url = server.url
    own = aioredis.Redis.from_url(url)
    try:
        await create_room(own, namespace, "main", "alice", members=["bob"])
        await own.aclose()
        gw = cluster.start(GATEWAY, env={"REDIS_URL": url})
        alice, _ = await client(gw.ws_url, "alice")
        bob, _ = await client(gw.ws_url, "bob")
        await send_acked(alice, "main", "before")
        (ev,) = await events_of(bob, "main", 1)
        assert ev["data"]["text"] == "before"

        server.stop()
        down = await request(alice, {"type": "send", "room": "main", "text": "x", "id": "down"})
        assert (down["type"], down["code"]) == ("error", "unavailable")
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{gw.url}/readyz")).status_code == 503
        # The sockets stay open meanwhile.
        assert (await request(bob, {"type": "ping"}))["type"] == "pong"

        server.start()
        ack: dict = {}
        deadline = time.monotonic() + 30
        while ack.get("type") != "ack":
            assert time.monotonic() < deadline, ack
            ack = await request(
                alice, {"type": "send", "room": "main", "text": "after", "id": "after"}
            )
            if ack.get("type") != "ack":
                assert ack["code"] == "unavailable"
                await asyncio.sleep(0.2)
        assert ack["seq"] == 3
        # The tail resumed from its last ids: the next event arrives, nothing in between.
        (ev,) = await events_of(bob, "main", 1)
        assert (ev["seq"], ev["data"]["text"]) == (3, "after")
        await alice.close()
        await bob.close()
    finally:
        server.stop()


async def test_join_asks_the_rooms_api_when_the_read_model_lacks_the_room(
    cluster, namespace, redis_client
):
    rooms = cluster.start("roomstream_rooms")
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_ROOMS_URL": rooms.url})
    async with httpx.AsyncClient(
        base_url=rooms.url, headers={"Authorization": f"Bearer {make_token('owner')}"}
    ) as http:
        r = await http.post("/rooms", json={"id": "api-room", "name": "API", "kind": "public"})
        assert r.status_code == 201, r.text
    k = keys(namespace)
    await redis_client.delete(k.room("api-room"))  # as if the read model had been flushed
    dora, _ = await client(gw.ws_url, "dora")
    joined = await request(dora, {"type": "join", "room": "api-room"})
    assert joined["type"] == "joined" and joined["seq"] >= 2, joined
    ack = await send_acked(dora, "api-room", "hello api room")
    (ev,) = await events_of(dora, "api-room", 1)
    assert ev["seq"] == ack["seq"] == joined["seq"] + 1
    missing = await request(dora, {"type": "join", "room": "no-such-room"})
    assert missing["code"] == "not_found"
    await dora.close()
