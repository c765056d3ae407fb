"""Node incarnations (issue 9 item 6): a gateway SIGKILLed and restarted under the same node id
within the monitor's timeout does not leave presence ghosts — the new process life retires the
old one's connections at once — whatever order the log's shards deliver the events in.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from roomstream_contracts.events import EventKind
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.node import Heartbeat, node_started_envelope
from roomstream_monitor.registry import Registry

from tests.gateway.helpers import client, recv_until, request
from tests.rooms.helpers import (
    FAST_ENV,
    ROOMS,
    api,
    append,
    auth,
    conn_event,
    log_envelopes,
    node_failed,
    poll,
)
from tests.support.redis_server import OwnRedis, require_redis_server

GATEWAY = "roomstream_gateway"
MONITOR = "roomstream_monitor"


async def test_sigkill_and_fast_restart_retires_the_dead_incarnation(
    cluster, namespace, redis_client
):
    rooms = cluster.start(ROOMS, env=FAST_ENV, name="rooms")
    gw_env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    gw_a, gw_b = (
        cluster.start(
            GATEWAY,
            env={**gw_env, "ROOMSTREAM_NODE_ID": f"gw-{n}"},
            name=f"gw-{n}",
            ready_path="/healthz",
        )
        for n in ("a", "b")
    )
    # The monitor with its default 15 s timeout: the restart below comes well within it.
    cluster.start(MONITOR, env={"ROOMSTREAM_CHECK_INTERVAL_S": "0.2"}, name="monitor")
    async with api(rooms.url) as http:
        r = await http.post(
            "/rooms",
            json={"id": "hall", "name": "Hall", "kind": "public", "members": ["bob", "carol"]},
            headers=auth("alice"),
        )
        assert r.status_code == 201

        await client(gw_a.ws_url, "alice")
        await client(gw_a.ws_url, "bob")
        carol, _ = await client(gw_b.ws_url, "carol")

        async def http_presence() -> list[dict]:
            r = await http.get("/rooms/hall/presence", headers=auth("carol"))
            return r.json()["users"]

        async def presence_is(expected: list[dict]) -> bool:
            return await http_presence() == expected

        everyone = [
            {"user": "alice", "connections": 1},
            {"user": "bob", "connections": 1},
            {"user": "carol", "connections": 1},
        ]
        await poll(lambda: presence_is(everyone))

        # gw-a crashes and comes back at once under the same node id; alice reconnects, bob not.
        gw_a.kill()
        gw_a.start()
        restarted = time.monotonic()
        alice2, _ = await client(gw_a.ws_url, "alice")
        after = [{"user": "alice", "connections": 1}, {"user": "carol", "connections": 1}]
        await poll(lambda: presence_is(after), deadline_s=14)
        took = time.monotonic() - restarted
        print(f"presence correct {took:.2f}s after the restart")
        # Corrected by the new incarnation itself: the monitor has declared nothing.
        envs = await log_envelopes(redis_client, namespace)
        assert not [e for e in envs if e["kind"] == "node_failed"], "waited for the monitor"
        started = [e for e in envs if e["kind"] == "node_started" and e["node"] == "gw-a"]
        assert (
            len(started) == 2
            and started[0]["data"]["incarnation"] < started[1]["data"]["incarnation"]
        )
        # The `presence` command on both gateways agrees; carol was told that bob left.
        for ws in (carol, alice2):
            reply = await request(ws, {"type": "presence", "room": "hall"})
            assert reply["type"] == "presence" and reply["users"] == after, reply
        frames = await recv_until(
            carol, lambda f: f.get("kind") == "offline" and f.get("user") == "bob"
        )
        assert frames[-1]["room"] == "hall"
        # alice had one connection before and one after: never a count of 2 (ghost + new).
        assert await http_presence() == after


async def test_incarnation_order_is_safe_across_shards(cluster, namespace, redis_client):
    """Events of two incarnations of one node, in the orders the shards may deliver them."""
    rooms = cluster.start(ROOMS, env=FAST_ENV)
    k = StreamKeys(namespace=namespace)
    old, new = 1_000, 2_000
    async with api(rooms.url) as http:
        body = {"id": "lobby", "name": "Lobby", "kind": "public", "members": ["bob", "carol"]}
        assert (await http.post("/rooms", json=body, headers=auth("alice"))).status_code == 201

        async def presence_is(expected: dict[str, int]) -> bool:
            r = await http.get("/rooms/lobby/presence", headers=auth("alice"))
            return r.json()["users"] == [
                {"user": u, "connections": n} for u, n in sorted(expected.items())
            ]

        def conn(kind: EventKind, user: str, conn_id: str, incarnation: int):
            return conn_event(kind, user, "g1", conn_id, incarnation=incarnation)

        await append(redis_client, namespace, conn(EventKind.CONNECTED, "alice", "a-old", old))
        await append(redis_client, namespace, conn(EventKind.CONNECTED, "bob", "b-old", old))
        await poll(lambda: presence_is({"alice": 1, "bob": 1}))

        # The new incarnation's `connected` is processed before its `node_started`: it stays, and
        # it already proves the old incarnation dead (bob's ghost goes).
        await append(redis_client, namespace, conn(EventKind.CONNECTED, "alice", "a-new", new))
        await poll(lambda: presence_is({"alice": 1}))
        await append(redis_client, namespace, node_started_envelope("g1", "gateway", new))
        # A late `connected` of the old incarnation (another shard, reclaimed): stored closed.
        await append(redis_client, namespace, conn(EventKind.CONNECTED, "carol", "c-old", old))
        # A late `node_started` of the old incarnation and the monitor's `node_failed` of it
        # (claimed just before the restart) retire nothing of the new one.
        await append(redis_client, namespace, node_started_envelope("g1", "gateway", old))
        failed = node_failed("g1")
        failed = failed.model_copy(update={"data": {**failed.data, "incarnation": old}})
        await append(redis_client, namespace, failed)
        # A marker: once carol's later connection on another node is applied, all above is too.
        await append(redis_client, namespace, conn_event(EventKind.CONNECTED, "carol", "g2", "c2"))
        await poll(lambda: presence_is({"alice": 1, "carol": 1}))
        await asyncio.sleep(1.0)  # anything still in flight on g1's shards is applied by now
        assert await presence_is({"alice": 1, "carol": 1})
        assert await redis_client.hgetall(k.node_conns("g1")) == {b"a-new": b"alice"}

        # The new incarnation declared failed in turn: now its connections go.
        failed_new = failed.model_copy(update={"data": {**failed.data, "incarnation": new}})
        await append(redis_client, namespace, failed_new)
        await poll(lambda: presence_is({"carol": 1}))


async def test_claim_names_the_dead_incarnation(namespace, redis_client: aioredis.Redis):
    """The monitor's claim returns the incarnation that stopped beating; a restart (a new
    incarnation registering) refreshes the node's score atomically, so it is not claimed."""
    keys = StreamKeys(namespace=namespace)
    registry = Registry(redis_client, keys)
    first = Heartbeat(redis_client, keys, "gw-x", "gateway", interval_s=1, ttl_s=3)
    inc1 = await first.register()
    await redis_client.zadd(keys.nodes(), {"gw-x": 1})  # as if it had stopped beating long ago
    second = Heartbeat(redis_client, keys, "gw-x", "gateway", interval_s=1, ttl_s=3)
    inc2 = await second.register()  # restarted: newer incarnation, fresh score
    assert inc2 > inc1
    assert await registry.claim("gw-x", deadline_ms=int(time.time() * 1000) - 5000) is None
    await redis_client.zadd(keys.nodes(), {"gw-x": 1})  # now the second one stops beating
    claim = await registry.claim("gw-x", deadline_ms=int(time.time() * 1000) - 5000)
    assert claim is not None and claim.incarnation == inc2 and claim.last_seen_ms == 1
    # A clock behind the previous start still yields a newer incarnation.
    await redis_client.hset(keys.incarnations(), "gw-x", str(inc2 + 10**9))
    third = Heartbeat(redis_client, keys, "gw-x", "gateway", interval_s=1, ttl_s=3)
    assert await third.register() == inc2 + 10**9 + 1


async def test_disconnected_lost_in_a_redis_outage_is_appended_later(cluster, tmp_path):
    """A socket that closes while Redis is down: its `disconnected` cannot be appended then; the
    gateway appends it once Redis is back, so presence does not keep it for the process's life."""
    require_redis_server()
    own = OwnRedis(tmp_path / "redis")
    own.dir.mkdir()
    own.start()
    try:
        env = {"REDIS_URL": own.url}
        rooms = cluster.start(ROOMS, env={**FAST_ENV, **env}, name="rooms")
        gateway = cluster.start(
            GATEWAY,
            env={**env, "ROOMSTREAM_ROOMS_URL": rooms.url, "ROOMSTREAM_NODE_ID": "gw-o"},
            name="gw-o",
            ready_path="/healthz",
        )
        async with api(rooms.url) as http:
            body = {"id": "hall", "name": "Hall", "kind": "public", "members": ["bob"]}
            assert (await http.post("/rooms", json=body, headers=auth("alice"))).status_code == 201
            await client(gateway.ws_url, "alice")
            bob, _ = await client(gateway.ws_url, "bob")

            async def presence_is(expected: list[dict]) -> bool:
                r = await http.get("/rooms/hall/presence", headers=auth("alice"))
                return r.status_code == 200 and r.json()["users"] == expected

            alice_only = [{"user": "alice", "connections": 1}]
            await poll(lambda: presence_is([*alice_only, {"user": "bob", "connections": 1}]))
            own.stop()
            await bob.close()  # its `disconnected` fails: Redis is down
            await asyncio.sleep(1.0)
            own.start()
            await poll(lambda: presence_is(alice_only), deadline_s=20)
            assert gateway.running and rooms.running
    finally:
        own.stop()
