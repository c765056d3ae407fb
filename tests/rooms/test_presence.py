"""Presence from the log's connection events (as gateways and the monitor append them): counted
per user across nodes, `online` / `offline` once per transition, corrected by `node_failed`,
updated when a member is added or removed while online."""

from __future__ import annotations

from collections import Counter

from roomstream_contracts.events import EventKind

from tests.rooms.helpers import (
    FAST_ENV,
    ROOMS,
    api,
    append,
    auth,
    conn_event,
    keys,
    log_envelopes,
    node_failed,
    poll,
)


async def test_presence_counts_transitions_and_node_failure(
    cluster, namespace, database_url, redis_client
):
    rooms = cluster.start(ROOMS, env=FAST_ENV)
    k = keys(namespace)
    async with api(rooms.url) as http:
        body = {"id": "lobby", "name": "Lobby", "kind": "public", "members": ["bob"]}
        assert (await http.post("/rooms", json=body, headers=auth("alice"))).status_code == 201

        async def presence_is(expected: dict[str, int]) -> bool:
            r = await http.get("/rooms/lobby/presence", headers=auth("alice"))
            return r.json()["users"] == [
                {"user": u, "connections": n} for u, n in sorted(expected.items())
            ]

        async def notices() -> Counter[tuple[str, str]]:
            return Counter(
                (e["kind"], e["user"])
                for e in await log_envelopes(redis_client, namespace)
                if e["kind"] in ("online", "offline") and e["room"] == "lobby"
            )

        for user, node, conn in [
            ("alice", "g1", "a1"),
            ("alice", "g2", "a2"),
            ("bob", "g2", "b1"),
            ("carol", "g1", "c1"),
        ]:
            await append(redis_client, namespace, conn_event(EventKind.CONNECTED, user, node, conn))
        await poll(lambda: presence_is({"alice": 2, "bob": 1}))
        assert await redis_client.hgetall(k.user_conns("alice")) == {b"a1": b"g1", b"a2": b"g2"}
        assert await redis_client.hgetall(k.node_conns("g2")) == {b"a2": b"alice", b"b1": b"bob"}

        # carol is online but not a member; adding her puts her into the room's presence at once.
        assert (
            await http.put("/rooms/lobby/members/carol", headers=auth("carol"))
        ).status_code == 200
        assert await presence_is({"alice": 2, "bob": 1, "carol": 1})

        # One of alice's two connections goes: still online, one connection.
        await append(
            redis_client, namespace, conn_event(EventKind.DISCONNECTED, "alice", "g1", "a1")
        )
        await poll(lambda: presence_is({"alice": 1, "bob": 1, "carol": 1}))

        # g2 dies: every connection it held leaves presence.
        await append(redis_client, namespace, node_failed("g2"))
        await poll(lambda: presence_is({"carol": 1}))
        assert await redis_client.hgetall(k.node_conns("g2")) == {}
        assert await redis_client.hgetall(k.user_conns("alice")) == {}

        # Removing an online member takes her out of the room's presence.
        assert (
            await http.delete("/rooms/lobby/members/carol", headers=auth("carol"))
        ).status_code == 204
        assert await presence_is({})

        async def all_notices() -> bool:
            return await notices() == Counter(
                {
                    ("online", "alice"): 1,
                    ("online", "bob"): 1,
                    ("online", "carol"): 1,
                    ("offline", "alice"): 1,
                    ("offline", "bob"): 1,
                }
            )

        await poll(all_notices)
        online = [
            e
            for e in await log_envelopes(redis_client, namespace)
            if e["kind"] == "online" and e["room"] == "lobby"
        ]
        assert all("seq" not in e and e["data"]["connections"] >= 1 for e in online)
