"""`python -m roomstream_rooms rebuild` rebuilds both projections from the log; the rebuilt ones
equal the live ones."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
from roomstream_contracts.events import EventKind

from tests.rooms.helpers import (
    FAST_ENV,
    ROOMS,
    api,
    append,
    auth,
    conn_event,
    group_pending,
    log_length,
    node_failed,
    poll,
    snapshot,
)


async def test_rebuilt_projection_equals_the_live_one(
    cluster, namespace, database_url, redis_client
):
    rooms = cluster.start(ROOMS, env=FAST_ENV)
    async with api(rooms.url) as http:
        for i in range(4):
            body = {
                "id": f"r{i}",
                "name": f"R{i}",
                "kind": ["public", "private"][i % 2],
                "members": ["bob"],
            }
            assert (await http.post("/rooms", json=body, headers=auth("alice"))).status_code == 201
        for i in range(4):
            assert (
                await http.put(f"/rooms/r{i}/members/u{i}", headers=auth("alice"))
            ).status_code == 200
        assert (await http.delete("/rooms/r1/members/bob", headers=auth("bob"))).status_code == 204
        for user, node, conn in [
            ("bob", "g1", "c1"),
            ("u0", "g2", "c2"),
            ("u2", "g2", "c3"),
            ("alice", "g1", "c4"),
        ]:
            await append(redis_client, namespace, conn_event(EventKind.CONNECTED, user, node, conn))
        await append(
            redis_client, namespace, conn_event(EventKind.DISCONNECTED, "alice", "g1", "c4")
        )
        await append(redis_client, namespace, node_failed("g2"))

        async def settled() -> bool:
            r = await http.get("/rooms/r0/presence", headers=auth("alice"))
            length = await log_length(redis_client, namespace)
            return (
                r.json() == {"users": [{"user": "bob", "connections": 1}]}
                and await group_pending(redis_client, namespace) == 0
                and length == await log_length(redis_client, namespace)
            )

        await poll(settled)
    live = await snapshot(redis_client, namespace, database_url)
    rooms.terminate()
    length = await log_length(redis_client, namespace)

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        ROOMS,
        "rebuild",
        env={**os.environ, **cluster.env, "ROOMSTREAM_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    report = orjson.loads(stdout.splitlines()[-1])
    assert report["rooms"] == 4 and report["entries"] == length
    rebuilt = await snapshot(redis_client, namespace, database_url)
    assert rebuilt["postgres"]["memberships"] and rebuilt["redis"]
    assert rebuilt == live
    # Rebuilding appends nothing (no presence events replayed into the log).
    assert await log_length(redis_client, namespace) == length
