"""The monitor survives its Redis going away for 10 s and recovers by itself.

Uses a redis-server of the test's own (on a free port, with an append-only file so its data
survives the restart, like a production Redis) that it stops and starts again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog
from roomstream_kit.node import Heartbeat

from tests.conftest import Cluster
from tests.monitor.helpers import api, log_events, stats, wait_for
from tests.support.redis_server import OwnRedis, require_redis_server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    require_redis_server()
    server = OwnRedis(tmp_path, ["--appendfsync", "always"])
    server.start()
    yield server
    server.stop()


async def test_monitor_rides_out_redis_outage(
    cluster: Cluster, namespace: str, own_redis: OwnRedis
) -> None:
    env = {
        "REDIS_URL": own_redis.url,
        "ROOMSTREAM_NODE_TIMEOUT_S": "2",
        "ROOMSTREAM_CHECK_INTERVAL_S": "0.2",
    }
    monitor = cluster.start("roomstream_monitor", env=env)
    url = monitor.url
    await wait_for(lambda: stats(url), what="a first snapshot")

    own_redis.stop()
    outage_start = time.monotonic()

    async def unavailable() -> httpx.Response | None:
        r = await api(url, "/api/stats")
        return r if r.status_code == 503 else None

    r = await wait_for(unavailable, what="503 while Redis is away")
    assert r.json()["error"]["code"] == "unavailable"
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(url + "/readyz")).status_code == 503
        while time.monotonic() - outage_start < 10:
            assert monitor.running
            assert (await client.get(url + "/healthz")).status_code == 200
            assert (await api(url, "/api/nodes")).status_code == 503
            await asyncio.sleep(0.5)

    own_redis.start()
    r2 = await wait_for(lambda: stats(url), what="stats after Redis came back")
    assert r2["redis_latency_ms"] > 0
    assert monitor.running

    # Every background part works again: registry, detector and the log consumer.
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        keys = StreamKeys(namespace=namespace)
        hb = Heartbeat(client, keys, "gw-after", "gateway", interval_s=0.3, ttl_s=1.0)
        hb.start()

        async def listed() -> bool:
            s = await stats(url)
            return bool(s) and "gw-after" in {n["node"] for n in s["per_node"]}

        await wait_for(listed, what="a node registered after the outage")
        await hb.stop(deregister=False)

        async def failed() -> list | None:
            return await log_events(client, namespace, "node_failed") or None

        events = await wait_for(failed, what="node_failed after the outage")
        assert [e["data"]["node"] for e in events] == ["gw-after"]

        await EventLog(client, keys).append(
            Envelope(
                id=new_event_id(),
                kind=EventKind.MESSAGE,
                room="after",
                user="u",
                ts=now_ms(),
                data={"text": "hi", "client_id": "c1"},
            )
        )

        async def counted() -> bool:
            s = await stats(url)
            return bool(s) and any(r["room"] == "after" for r in s["busiest_rooms"])

        await wait_for(counted, what="the log consumer counting again")
    finally:
        await client.aclose()
