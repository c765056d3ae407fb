"""Read models: after the Redis read models are flushed, reads still answer from Postgres and
refill them; a restart refills every one of them."""

from __future__ import annotations

from roomstream_contracts.events import EventKind

from tests.rooms.helpers import (
    FAST_ENV,
    ROOMS,
    api,
    append,
    auth,
    conn_event,
    delete_read_models,
    keys,
    poll,
    redis_snapshot,
)


async def test_flushed_read_models_fall_back_to_postgres_and_refill(
    cluster, namespace, database_url, redis_client
):
    rooms = cluster.start(ROOMS, env=FAST_ENV)
    k = keys(namespace)
    async with api(rooms.url) as http:
        for body in (
            {"id": "alpha", "name": "Alpha", "kind": "private", "members": ["bob", "carol"]},
            {"id": "beta", "name": "Beta", "kind": "public", "members": ["bob"]},
        ):
            assert (await http.post("/rooms", json=body, headers=auth("alice"))).status_code == 201
        await append(redis_client, namespace, conn_event(EventKind.CONNECTED, "bob", "g1", "c1"))

        async def bob_online() -> bool:
            r = await http.get("/rooms/alpha/presence", headers=auth("alice"))
            return r.json() == {"users": [{"user": "bob", "connections": 1}]}

        await poll(bob_online)
        full = await redis_snapshot(redis_client, namespace)
        assert f":room:{{{k.room_shard('alpha')}}}:alpha" in full

        # Flushed while the service runs: every read answers from Postgres and refills Redis.
        assert await delete_read_models(redis_client, namespace) > 0
        assert await redis_snapshot(redis_client, namespace) == {}
        r = await http.get("/rooms/alpha", headers=auth("carol"))
        assert r.status_code == 200 and r.json()["name"] == "Alpha" and r.json()["seq"] == 1
        assert (await http.get("/rooms/alpha/members", headers=auth("carol"))).json() == {
            "members": ["alice", "bob", "carol"]
        }
        assert (await bob_online()) is True
        assert (await http.get("/users/bob/rooms", headers=auth("bob"))).json() == {
            "rooms": ["alpha", "beta"]
        }
        refilled = await redis_snapshot(redis_client, namespace)
        for key in (k.room("alpha"), k.members("alpha"), k.presence("alpha"), k.user_rooms("bob")):
            short = key[len(namespace) :]
            assert refilled[short] == full[short], key
        # A gateway reads the member set straight from Redis: it is complete again.
        assert await redis_client.sismember(k.members("alpha"), "carol")

        # Flushed while the service is down: the restart refills everything.
        rooms.terminate()
        await delete_read_models(redis_client, namespace)
        rooms.start()
        assert await redis_snapshot(redis_client, namespace) == full
        r = await http.get("/rooms/beta/members", headers=auth("zed"))
        assert r.json() == {"members": ["alice", "bob"]}
