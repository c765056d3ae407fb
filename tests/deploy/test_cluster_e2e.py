"""Gateways, rooms, history and the monitor against a real 3-master Redis Cluster.

Checks delivery (every client on either gateway gets every event exactly once, in seq order),
history (the history service persisted every message through the cluster consumer), and recovery
(a client that was away rejoins with `since` and gets exactly what it missed — partly from Redis,
partly from Postgres, since the recent buffer is kept short here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
from roomstream_client import Client
from roomstream_contracts.frames import EventFrame

from tests.conftest import Cluster, make_token, service_token
from tests.deploy.deployment import start_deployment
from tests.deploy.redis_cluster import RedisClusterProcesses
from tests.deploy.traffic import Chatter, check_exactly_once, create_public_room, wait_for

RECENT_PER_ROOM = 10


async def _history(history_url: str, room: str) -> list[int]:
    """Seqs of the room's events in the history service (all pages)."""
    seqs: list[int] = []
    after = 0
    async with httpx.AsyncClient(timeout=10.0) as http:
        while True:
            r = await http.get(
                f"{history_url}/rooms/{room}/messages",
                params={"after": after, "limit": 200},
                headers={"Authorization": f"Bearer {service_token()}"},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            seqs.extend(e["seq"] for e in body["events"])
            if not body["events"] or not body["more"]:
                return seqs
            after = body["events"][-1]["seq"]


def caught_up(chatters: list[Chatter], seq: int) -> Callable[[], bool]:
    return lambda: all(c.last_seq() >= seq for c in chatters)


async def test_services_on_a_redis_cluster(
    cluster: Cluster, redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    env = {
        "REDIS_URL": redis_cluster.url,
        "ROOMSTREAM_REDIS_CLUSTER": "1",
        "ROOMSTREAM_RECENT_PER_ROOM": str(RECENT_PER_ROOM),
    }
    deployment = start_deployment(cluster, tmp_path, env=env, with_monitor=True)
    assert deployment.monitor is not None
    gw1, gw2 = deployment.gateway_urls
    rooms = ["alpha", "beta", "gamma"]  # different shards, so different masters
    for room in rooms:
        await create_public_room(deployment.rooms.url, room)

    chatters = [
        await Chatter(f"u{i}-{room}", [gw1, gw2] if i % 2 else [gw2, gw1], room).start()
        for room in rooms
        for i in range(3)
    ]
    assert {c.node for c in chatters} == {"gateway-1", "gateway-2"}

    # delivery: everyone sends at once, everyone gets everything of their room once, in order
    await asyncio.gather(*(c.send_many(8, pause_s=0.01) for c in chatters))
    for room in rooms:
        members = [c for c in chatters if c.room == room]
        last = max(seq for c in members for seq in c.acked.values())
        await wait_for(caught_up(members, last), "delivery")
        check_exactly_once(members)

    # the monitor sees every node and every connection through the cluster
    monitor_url = deployment.monitor.url

    async def monitor_sees_all() -> bool:
        async with httpx.AsyncClient(timeout=10.0) as http:
            r = await http.get(
                f"{monitor_url}/api/stats", headers={"Authorization": f"Bearer {service_token()}"}
            )
        stats = r.json()
        return r.status_code == 200 and (stats["nodes"], stats["connections"]) == (
            5,
            len(chatters),
        )

    await wait_for(monitor_sees_all, "the monitor's cluster-wide stats")

    # recovery: one client goes away, the room moves on past the recent buffer's reach
    away = next(c for c in chatters if c.room == "alpha")
    since = away.last_seq()
    await away.close()
    stayers = [c for c in chatters if c.room == "alpha" and c is not away]
    await asyncio.gather(*(c.send_many(RECENT_PER_ROOM, pause_s=0.01) for c in stayers))
    last = max(seq for c in stayers for seq in c.acked.values())
    assert last - since > RECENT_PER_ROOM

    # history: the history service has every event of the room (persisted via the cluster)
    expected = list(range(1, last + 1))
    history_url = deployment.history.url

    async def persisted() -> bool:
        return await _history(history_url, "alpha") == expected

    await wait_for(persisted, "history persisted every event")

    back: list[EventFrame] = []
    client = Client([gw2, gw1], make_token(away.user), on_event=lambda e: back.append(e))  # type: ignore[arg-type]
    try:
        await client.connect()
        joined = await client.join("alpha", since=since)
        assert joined.recovered
        await wait_for(
            lambda: [e.seq for e in back if isinstance(e, EventFrame) and e.seq][-1:] == [last],
            "the missed events",
        )
        assert [e.seq for e in back if isinstance(e, EventFrame) and e.seq] == list(
            range(since + 1, last + 1)
        )
        page = await client.history("alpha", limit=200)
        assert [e.seq for e in page.events] == expected
    finally:
        await client.close()
        for c in chatters:
            await c.close()
