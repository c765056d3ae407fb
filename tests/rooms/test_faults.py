"""Postgres or Redis goes away (a TCP proxy in front of it is cut) while events keep arriving: the
API answers what it can or says `unavailable` (never 500, never a crash), and when the dependency
returns the projection catches up with nothing lost."""

from __future__ import annotations

import asyncio

from roomstream_contracts.events import EventKind

from tests.conftest import REDIS_URL
from tests.rooms.helpers import (
    FAST_ENV,
    ROOMS,
    api,
    append,
    applied_total,
    auth,
    member_event,
    message,
    poll,
)
from tests.support.proxy import CuttableProxy


async def test_postgres_outage_then_catch_up(cluster, namespace, database_url, redis_client):
    proxy, via_proxy = await CuttableProxy.before_postgres(database_url)
    env = {
        **FAST_ENV,
        "DATABASE_URL": via_proxy,
        "ROOMSTREAM_APPLY_TIMEOUT_S": "2",
    }
    # Started from a thread: the proxy runs on this event loop and must keep serving meanwhile.
    rooms = await asyncio.to_thread(cluster.start, ROOMS, env=env)
    try:
        async with api(rooms.url) as http:
            body = {"id": "ops", "name": "Ops", "kind": "private", "members": ["bob"]}
            assert (await http.post("/rooms", json=body, headers=auth("alice"))).status_code == 201

            await proxy.cut()
            assert (await http.get("/readyz")).status_code == 503
            # Reads served by the read models still answer.
            r = await http.get("/rooms/ops/members", headers=auth("bob"))
            assert r.status_code == 200 and r.json() == {"members": ["alice", "bob"]}
            # A write reaches the log but cannot be applied now: 503, not 500.
            r = await http.put("/rooms/ops/members/carol", headers=auth("alice"))
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
            # The gateways keep appending meanwhile.
            for i in range(20):
                await append(redis_client, namespace, message("ops", "bob", f"m{i}"))
            await append(
                redis_client,
                namespace,
                member_event(EventKind.MEMBER_JOINED, "ops", "dave", "alice"),
            )
            r = await http.get("/users/nobody-yet/rooms", headers=auth("nobody-yet"))
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"

            await proxy.restore()
            # 1 room_created + carol + 20 messages + dave: every seq applied, in order.
            await poll(lambda: _applied(database_url, 23))
            r = await http.get("/rooms/ops/members", headers=auth("bob"))
            assert r.json() == {"members": ["alice", "bob", "carol", "dave"]}
            r = await http.get("/rooms/ops", headers=auth("bob"))
            assert r.json()["seq"] == 23
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await proxy.cut()


async def _applied(database_url: str, total: int) -> bool:
    return await applied_total(database_url) == total


async def test_redis_outage_then_catch_up(cluster, namespace, database_url, redis_client):
    proxy, redis_url = await CuttableProxy.before_redis(REDIS_URL)
    env = {**FAST_ENV, "REDIS_URL": redis_url}
    rooms = await asyncio.to_thread(cluster.start, ROOMS, env=env)
    try:
        async with api(rooms.url) as http:
            body = {"id": "ops", "name": "Ops", "kind": "public", "members": ["bob"]}
            assert (await http.post("/rooms", json=body, headers=auth("alice"))).status_code == 201

            await proxy.cut()
            for path in ("/rooms/ops", "/rooms/ops/members", "/rooms/ops/presence"):
                r = await http.get(path, headers=auth("bob"))
                assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
            r = await http.put("/rooms/ops/members/carol", headers=auth("alice"))
            assert r.status_code == 503, r.text
            # Other producers reach Redis meanwhile (the cut is only this service's link).
            for i in range(10):
                await append(redis_client, namespace, message("ops", "bob", f"m{i}"))
            await append(
                redis_client, namespace, member_event(EventKind.MEMBER_JOINED, "ops", "dave", "bob")
            )

            await proxy.restore()
            await poll(lambda: _applied(database_url, 12))
            r = await http.get("/rooms/ops/members", headers=auth("bob"))
            assert r.json() == {"members": ["alice", "bob", "dave"]}
            assert rooms.running
    finally:
        await proxy.cut()
