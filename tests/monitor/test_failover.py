"""Failover with real processes: rooms service, two gateways, two monitors.

SIGKILL of a gateway: within the timeout exactly one `node_failed` (even with two monitors), the
stats drop that node, presence is corrected (the rooms service consumes node_failed) and the other
members are told. SIGTERM of a gateway: it deregisters, no `node_failed`.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import redis.asyncio as aioredis
from roomstream_client import Client

from tests.conftest import Cluster, make_token, service_token
from tests.monitor.helpers import log_events, stats, wait_for

TIMEOUT_S = 3.0
MONITOR_ENV = {"ROOMSTREAM_NODE_TIMEOUT_S": str(TIMEOUT_S), "ROOMSTREAM_CHECK_INTERVAL_S": "0.2"}


async def presence(rooms_url: str, room: str) -> set[str]:
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(
            f"{rooms_url}/rooms/{room}/presence",
            headers={"Authorization": f"Bearer {service_token()}"},
        )
        r.raise_for_status()
        return {u["user"] for u in r.json()["users"]}


async def test_sigkill_gives_one_node_failed_and_sigterm_none(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    gw_env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    gw_a = cluster.gateway("gw-a", gw_env, ready_path="/healthz")
    gw_b = cluster.gateway("gw-b", gw_env, ready_path="/healthz")
    monitors = [
        cluster.start(
            "roomstream_monitor",
            env={**MONITOR_ENV, "ROOMSTREAM_NODE_ID": f"mon-{i}"},
            name=f"mon-{i}",
        )
        for i in range(2)
    ]
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"{rooms.url}/rooms",
            json={"id": "lobby", "name": "Lobby", "kind": "public", "members": ["alice", "bob"]},
            headers={"Authorization": f"Bearer {service_token()}"},
        )
        assert r.status_code == 201, r.text

    alice = Client(gw_a.ws_url, make_token("alice"), connect_timeout=10)
    bob = Client(gw_b.ws_url, make_token("bob"))
    await alice.connect()
    await bob.connect()
    try:

        async def both_online() -> bool:
            return await presence(rooms.url, "lobby") == {"alice", "bob"}

        await wait_for(both_online, what="alice and bob online")

        async def gateways_listed() -> dict | None:
            s = await stats(monitors[0].url)
            gws = {n["node"]: n for n in (s or {}).get("per_node", []) if n["kind"] == "gateway"}
            if set(gws) == {"gw-a", "gw-b"} and all(g["connections"] == 1 for g in gws.values()):
                return s
            return None

        s = await wait_for(gateways_listed, what="both gateways with one connection each")
        assert s["connections"] == 2

        gw_a.kill()  # SIGKILL: no deregistration, no disconnected events
        with contextlib.suppress(Exception):
            await asyncio.wait_for(alice.close(), 5)

        async def one_failed() -> list | None:
            return await log_events(redis_client, namespace, "node_failed") or None

        events = await wait_for(one_failed, what="node_failed for gw-a")
        assert [e["data"]["node"] for e in events] == ["gw-a"]

        async def dropped() -> dict | None:
            s = await stats(monitors[1].url)
            if s is None:
                return None
            nodes = {n["node"] for n in s["per_node"]}
            return s if "gw-a" not in nodes and "gw-b" in nodes else None

        s = await wait_for(dropped, what="stats without gw-a")
        assert s["connections"] == 1
        assert "gw-a" in {f["node"] for f in s["failed_nodes"]}

        async def corrected() -> bool:
            return await presence(rooms.url, "lobby") == {"bob"}

        await wait_for(corrected, what="presence without alice")

        async def told() -> bool:
            async for event in bob.events():
                if getattr(event, "kind", None) == "offline" and event.user == "alice":
                    return True
            return False

        assert await asyncio.wait_for(told(), 60), "bob was not told that alice went offline"
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bob.close(), 5)

    # A clean stop deregisters: the monitors never report it.
    # Generous: the gateway drains its sockets (close timeout + wait) on a loaded machine.
    assert gw_b.terminate(timeout=60) == 0
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(
            f"{monitors[0].url}/api/nodes", headers={"Authorization": f"Bearer {service_token()}"}
        )
        assert "gw-b" not in {n["node"] for n in r.json()["nodes"]}
    await asyncio.sleep(TIMEOUT_S * 2)  # several detector passes past the timeout
    events = await log_events(redis_client, namespace, "node_failed")
    assert [e["data"]["node"] for e in events] == ["gw-a"]
    assert all(m.running for m in monitors)
