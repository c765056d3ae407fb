"""SIGTERM: every socket gets 1012, `disconnected` is logged, the node record goes, exit code 0."""

from __future__ import annotations

import asyncio

from tests.gateway.helpers import client, close_code, create_room, keys, log_events, poll

GATEWAY = "roomstream_gateway"


async def test_sigterm_closes_1012_deregisters_and_exits_0(cluster, namespace, redis_client):
    await create_room(redis_client, namespace, "main", "alice", members=["bob"])
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_NODE_ID": "gw-under-test"})
    other = cluster.start(GATEWAY)
    k = keys(namespace)

    async def registered() -> bool:
        return bool(await redis_client.exists(k.node("gw-under-test")))

    await poll(registered)
    record = await redis_client.hgetall(k.node("gw-under-test"))
    assert record[b"kind"] == b"gateway"
    alice, w1 = await client(gw.ws_url, "alice")
    bob, w2 = await client(gw.ws_url, "bob")
    survivor, _ = await client(other.ws_url, "bob")

    async def beat_counts_two() -> bool:
        rec = await redis_client.hgetall(k.node("gw-under-test"))
        return rec.get(b"connections") == b"2"

    await poll(beat_counts_two)

    codes = asyncio.gather(close_code(alice), close_code(bob))
    exit_code = await asyncio.to_thread(gw.terminate)
    assert await codes == [1012, 1012]
    assert exit_code == 0
    assert not await redis_client.exists(k.node("gw-under-test"))
    assert await redis_client.zscore(k.nodes(), "gw-under-test") is None

    events = await log_events(redis_client, namespace)
    gone = [e for e in events if e["kind"] == "disconnected" and e["node"] == "gw-under-test"]
    assert {e["conn"] for e in gone} == {w1["conn"], w2["conn"]}
    assert all(e["data"]["code"] == 1012 for e in gone)
    # The other gateway is unaffected.
    await survivor.send('{"type": "ping", "ref": "p"}')
    assert "pong" in await asyncio.wait_for(survivor.recv(), 30)
    await survivor.close()
