"""`/metrics` of every service parses as Prometheus text and its series move with traffic."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from roomstream_client import Client
from roomstream_client.errors import ClientError, CommandError

from tests.conftest import Cluster, make_token, service_token
from tests.monitor.helpers import stats, wait_for
from tests.observability.helpers import has, moved, scrape, total

SERVICE = {"Authorization": f"Bearer {service_token()}"}


async def test_every_service_metrics_move_with_traffic(cluster: Cluster) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    history = cluster.start("roomstream_history", name="history")
    gw_env = {
        "ROOMSTREAM_ROOMS_URL": rooms.url,
        "ROOMSTREAM_HISTORY_URL": history.url,
        "ROOMSTREAM_SEND_BURST": "5",
        "ROOMSTREAM_SEND_RATE_PER_S": "0.5",
    }
    gw_a = cluster.gateway("gw-a", gw_env, ready_path="/healthz")
    gw_b = cluster.gateway("gw-b", gw_env, ready_path="/healthz")
    monitor = cluster.start("roomstream_monitor", name="monitor")
    services = {"rooms": rooms, "history": history, "gw-a": gw_a, "gw-b": gw_b, "monitor": monitor}
    await wait_for(lambda: stats(monitor.url), what="a monitor snapshot")
    before = {name: await scrape(p.url) for name, p in services.items()}

    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"{rooms.url}/rooms",
            json={"id": "obs", "name": "Obs", "kind": "public", "members": ["alice", "bob"]},
            headers=SERVICE,
        )
        assert r.status_code == 201, r.text
        # Bad input: API errors by code on rooms and history.
        assert (
            await http.post(f"{rooms.url}/rooms", content=b"{", headers=SERVICE)
        ).status_code == 400
        bad = await http.get(f"{history.url}/rooms/obs/messages?limit=abc", headers=SERVICE)
        assert bad.status_code == 400

    with pytest.raises(ClientError):  # a wrong token: an auth failure on gw-a
        await Client(gw_a.ws_url, "not-a-token", connect_timeout=5).connect()

    alice = Client(gw_a.ws_url, make_token("alice"))
    bob = Client(gw_b.ws_url, make_token("bob"))
    await alice.connect()
    await bob.connect()
    try:
        for i in range(5):
            await alice.send("obs", f"hello {i}")

        async def five_delivered() -> bool:
            got = 0
            async for event in bob.events():
                if getattr(event, "kind", None) == "message":
                    got += 1
                    if got == 5:
                        return True
            return False

        assert await asyncio.wait_for(five_delivered(), 60)
        limited = 0
        for i in range(8):  # past the burst: rate_limited
            try:
                await alice.send("obs", f"flood {i}")
            except CommandError as exc:
                assert exc.code == "rate_limited"
                limited += 1
        assert limited > 0

        async def persisted() -> bool:
            async with httpx.AsyncClient(timeout=5) as http:
                r = await http.get(f"{history.url}/rooms/obs/messages", headers=SERVICE)
                kinds = [e["kind"] for e in r.json()["events"]] if r.status_code == 200 else []
                return kinds.count("message") >= 5

        await wait_for(persisted, what="messages persisted by history")

        async def counted() -> bool:
            s = await stats(monitor.url)
            return bool(s) and s["messages_per_s"] > 0 and s["connections"] == 2

        await wait_for(counted, what="the monitor counting messages and connections")
        after = {name: await scrape(p.url) for name, p in services.items()}
        connected = {
            name: total(after[name], "roomstream_gateway_connections") for name in ("gw-a", "gw-b")
        }
    finally:
        for c in (alice, bob):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 5)

    assert connected == {"gw-a": 1.0, "gw-b": 1.0}
    gateway_a = {
        "roomstream_gateway_messages_in_total": {"type": "send"},
        "roomstream_gateway_auth_failures_total": {},
        "roomstream_gateway_rate_limited_total": {},
        "roomstream_gateway_errors_total": {"code": "rate_limited"},
        "roomstream_gateway_redis_latency_seconds_count": {},
    }
    assert moved(before["gw-a"], after["gw-a"], gateway_a) == []
    gateway_b = {  # bob's gateway delivered alice's messages
        "roomstream_gateway_frames_out_total": {},
        "roomstream_gateway_delivery_latency_seconds_count": {},
        "roomstream_gateway_delivery_latency_seconds_bucket": {"le": "+Inf"},
    }
    assert moved(before["gw-b"], after["gw-b"], gateway_b) == []
    rooms_series = {
        "roomstream_rooms_events_applied_total": {"kind": "message"},
        "roomstream_rooms_batch_size_count": {},
        "roomstream_rooms_postgres_latency_seconds_count": {},
        "roomstream_rooms_redis_latency_seconds_count": {},
        "roomstream_rooms_api_errors_total": {},
    }
    assert moved(before["rooms"], after["rooms"], rooms_series) == []
    assert has(after["rooms"], "roomstream_rooms_consumer_lag")
    history_series = {
        "roomstream_history_events_persisted_total": {"kind": "message"},
        "roomstream_history_batch_size_count": {},
        "roomstream_history_pg_write_seconds_count": {},
        "roomstream_history_api_errors_total": {},
    }
    assert moved(before["history"], after["history"], history_series) == []
    assert has(after["history"], "roomstream_history_consumer_lag")
    monitor_series = {
        "roomstream_monitor_events_consumed_total": {"kind": "message"},
        "roomstream_monitor_redis_latency_seconds_count": {},
        "roomstream_monitor_messages_per_second": {},
        "roomstream_monitor_cluster_connections": {},
    }
    assert moved(before["monitor"], after["monitor"], monitor_series) == []
    for group in ("rooms", "history", "monitor"):
        assert has(after["monitor"], "roomstream_monitor_consumer_lag", group=group)
        assert has(after["monitor"], "roomstream_monitor_consumer_pending", group=group)
    assert total(after["monitor"], "roomstream_monitor_nodes", kind="gateway") == 2
    for name, samples in after.items():
        assert has(samples, "target_info"), name
