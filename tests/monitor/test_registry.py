"""Monitor processes against heartbeats of the test's own: node_failed exactly once (two
monitors), deregistered nodes never reported, stats and message rates, bad input → 4xx JSON."""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog
from roomstream_kit.node import Heartbeat

from tests.conftest import Cluster, make_token
from tests.monitor.helpers import api, log_events, stats, wait_for

MONITOR_ENV = {"ROOMSTREAM_NODE_TIMEOUT_S": "2", "ROOMSTREAM_CHECK_INTERVAL_S": "0.2"}


def start_monitors(cluster: Cluster, n: int) -> list[str]:
    return [
        cluster.start(
            "roomstream_monitor", env={**MONITOR_ENV, "ROOMSTREAM_NODE_ID": f"monitor-{i}"}
        ).url
        for i in range(n)
    ]


def beat(redis: aioredis.Redis, keys: StreamKeys, node: str, connections: int) -> Heartbeat:
    hb = Heartbeat(
        redis,
        keys,
        node,
        "gateway",
        interval_s=0.3,
        ttl_s=1.0,
        stats=lambda: {"connections": connections, "rooms": 2, "messages_per_s": 0.0},
    )
    hb.start()
    return hb


async def test_one_node_failed_from_two_monitors_and_none_for_deregistered(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    keys = StreamKeys(namespace=namespace)
    urls = start_monitors(cluster, 2)
    crashing = beat(redis_client, keys, "gw-crash", 5)
    leaving = beat(redis_client, keys, "gw-clean", 3)

    async def both_listed() -> dict | None:
        s = await stats(urls[0])
        names = {n["node"] for n in (s or {}).get("per_node", [])}
        return s if {"gw-crash", "gw-clean", "monitor-0", "monitor-1"} <= names else None

    s = await wait_for(both_listed, what="both heartbeating nodes in the stats")
    assert s["connections"] == 8
    assert s["nodes"] == 4
    crash_view = next(n for n in s["per_node"] if n["node"] == "gw-crash")
    assert crash_view["kind"] == "gateway" and crash_view["rooms"] == 2
    assert crash_view["memory_bytes"] > 0 and crash_view["uptime_s"] >= 0

    await crashing.stop(deregister=False)  # a crash: the record is left to expire
    await leaving.stop(deregister=True)  # a clean stop

    async def failed_event() -> list | None:
        return await log_events(redis_client, namespace, "node_failed") or None

    events = await wait_for(failed_event, what="node_failed in the log")
    # Give both monitors several more detector passes: still exactly one event.
    await asyncio.sleep(2.0)
    events = await log_events(redis_client, namespace, "node_failed")
    assert [e["data"]["node"] for e in events] == ["gw-crash"]
    assert events[0]["node"] == "gw-crash"
    assert events[0]["data"]["last_seen_ms"] <= events[0]["ts"] - 2000

    async def dropped() -> dict | None:
        s = await stats(urls[1])
        if s is None:
            return None
        names = {n["node"] for n in s["per_node"]}
        failed = {f["node"] for f in s["failed_nodes"]}
        return (
            s
            if "gw-crash" not in names and "gw-clean" not in names and "gw-crash" in failed
            else None
        )

    s = await wait_for(dropped, what="the stats to drop the failed and the stopped node")
    assert s["connections"] == 0
    assert "gw-clean" not in {f["node"] for f in s["failed_nodes"]}
    nodes = (await api(urls[0], "/api/nodes")).json()
    assert {n["node"] for n in nodes["nodes"]} == {"monitor-0", "monitor-1"}
    assert [f["node"] for f in nodes["failed"]] == ["gw-crash"]
    assert (await api(urls[0], "/api/nodes?kind=gateway")).json()["nodes"] == []


async def test_message_rates_lag_and_latency_fields(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    # Two monitors share the consumer group: each counts its share into the same buckets.
    url, other_url = start_monitors(cluster, 2)
    log = EventLog(redis_client, StreamKeys(namespace=namespace))
    for room, count in (("busy", 12), ("quiet", 3)):
        for i in range(count):
            await log.append(
                Envelope(
                    id=new_event_id(),
                    kind=EventKind.MESSAGE,
                    room=room,
                    user="u1",
                    ts=now_ms(),
                    data={"text": f"m{i}", "client_id": f"{room}-{i}"},
                )
            )

    async def counted() -> dict | None:
        # All 15 counted once their seconds are complete (the current second is not counted).
        s = await stats(url)
        return s if s and s["messages_per_s"] == round(15 / 60, 3) else None

    s = await wait_for(counted, what="message rate in the stats")
    assert [r["room"] for r in s["busiest_rooms"]] == ["busy", "quiet"]
    assert s["busiest_rooms"][0]["messages_per_s"] == round(12 / 60, 3)
    assert s["consumer_lag"]["monitor"] == 0
    assert s["consumer_pending"]["monitor"] == 0
    assert s["redis_latency_ms"] > 0
    assert set(s["delivery_latency_ms"]) == {"p50", "p90", "p99"}

    async def same_on_the_other() -> bool:
        other = await stats(other_url)
        return bool(other) and other["busiest_rooms"] == s["busiest_rooms"]

    await wait_for(same_on_the_other, what="the same rates on the second monitor")
    top1 = (await api(url, "/api/stats?top=1")).json()
    assert [r["room"] for r in top1["busiest_rooms"]] == ["busy"]
    series = (await api(url, "/api/timeseries?seconds=120")).json()
    assert sum(count for _, count in series["messages"]) == 15
    assert series["snapshots"] and series["snapshots"][-1]["nodes"] >= 1


async def test_bad_input_gets_4xx_json_and_sigterm_deregisters(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    (url,) = start_monitors(cluster, 1)
    await wait_for(lambda: stats(url), what="a first snapshot")
    cases = [
        ("/api/stats?top=abc", None, 400, "bad_request"),
        ("/api/stats?top=1000", None, 400, "bad_request"),
        ("/api/stats?unknown=1", None, 400, "bad_request"),
        ("/api/timeseries?seconds=-5", None, 400, "bad_request"),
        ("/api/timeseries?seconds=1.5", None, 400, "bad_request"),
        ("/api/nodes?kind=%00%01", None, 400, "bad_request"),
        ("/api/nope", None, 404, "not_found"),
        ("/static/missing.js", None, 404, "not_found"),
        ("/api/stats", "not-a-jwt", 401, "unauthorized"),
        ("/api/stats", make_token("alice"), 403, "forbidden"),
    ]
    for path, token, status, code in cases:
        r = await api(url, path, token)
        assert r.status_code == status, (path, r.text)
        assert r.headers["content-type"].startswith("application/json"), path
        assert r.json()["error"]["code"] == code, (path, r.text)
    async with httpx.AsyncClient() as client:
        r = await client.get(url + "/api/stats")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = await client.post(url + "/api/stats", content=b"{")
        assert r.status_code == 405 and "error" in r.json()
        page = await client.get(url + "/")
        assert page.status_code == 200 and "chart.umd.min.js" in page.text
    assert cluster.procs[0].running
    keys = StreamKeys(namespace=namespace)
    assert await redis_client.zscore(keys.nodes(), "monitor-0") is not None
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown: exit by that signal.
    assert cluster.procs[0].terminate(30) in (0, -15)
    assert await redis_client.zscore(keys.nodes(), "monitor-0") is None
    assert not await redis_client.exists(keys.node("monitor-0"))
