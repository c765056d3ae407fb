"""Delivery faults with a real hooks process and real receivers on 127.0.0.1: a receiver that is
down for a while, one that answers 500, one that never answers (dead-lettered while a healthy one
keeps flowing; replayed afterwards), and a SIGKILL of the hooks service mid-batch."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from tests.conftest import Cluster
from tests.hooks.helpers import (
    Log,
    add_endpoint,
    api,
    assert_in_room_order,
    metric,
    scrape,
    start_hooks,
    wait_for,
)
from tests.hooks.receiver import SECRET_A, SECRET_B, Receiver
from tests.support.proxy import CuttableProxy

ROOMS = ["r1", "r2", "r3"]


async def _rooms(log: Log) -> None:
    for room in ROOMS:
        await log.room(room)


async def test_receiver_down_under_steady_traffic_gets_everything_once_in_order(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    receiver = await Receiver(SECRET_A).start()
    # Bounds well beyond the outage: nothing may be dead-lettered here.
    bounds = {
        "ROOMSTREAM_DEAD_LETTER_AFTER_ATTEMPTS": "10000",
        "ROOMSTREAM_DEAD_LETTER_AFTER_S": "300",
    }
    hooks = await start_hooks(cluster, {"ROOMSTREAM_DELIVERY_BATCH_MAX": "20", **bounds})
    await add_endpoint(hooks, "ep", receiver.url, SECRET_A, ["message"])
    log = Log(redis_client, namespace)
    await _rooms(log)
    sent: list[str] = []
    rate = 40.0  # messages per second, for ~14 s; the receiver is down from ~2 s to ~12 s

    async def traffic() -> None:
        start = time.monotonic()
        for i in range(560):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            env = await log.send(ROOMS[i % len(ROOMS)], f"m{i}")
            sent.append(env.id)

    task = asyncio.create_task(traffic())
    try:
        await wait_for(lambda: len(receiver.events) >= 40, what="first deliveries")
        await receiver.stop()
        down_at = len(sent)
        await asyncio.sleep(10)
        assert len(sent) > down_at + 200  # the traffic went on meanwhile
        # The log did not wait for the receiver: the hooks group is (almost) caught up.
        await wait_for(log.hooks_group_settled, deadline_s=10, what="log acknowledged")
        await receiver.start()
        await task
        await wait_for(
            lambda: receiver.unique_ids() >= set(sent), deadline_s=60, what="every event"
        )
    finally:
        task.cancel()
        await receiver.stop()
    got = receiver.first_seen()
    assert [e["id"] for e in got] == [e["id"] for e in got if e["id"] in set(sent)]
    assert {e["id"] for e in got} == set(sent)
    assert_in_room_order(got)
    assert receiver.bad_signatures == 0
    metrics = await scrape(hooks)
    delivered = metric(metrics, "roomstream_hooks_events_delivered_total", endpoint="ep")
    assert delivered is not None and delivered >= len(sent)
    assert metric(
        metrics, "roomstream_hooks_delivery_failures_total", endpoint="ep", reason="connect"
    )
    assert metric(metrics, "roomstream_hooks_backlog", endpoint="ep") is not None
    assert metric(metrics, "roomstream_hooks_delivery_seconds_count", endpoint="ep")


async def test_a_500_answer_is_retried_with_the_same_id(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    receiver = await Receiver(SECRET_A, fail_first=3).start()
    try:
        hooks = await start_hooks(cluster)
        await add_endpoint(hooks, "ep", receiver.url, SECRET_A, ["message"])
        log = Log(redis_client, namespace)
        await _rooms(log)
        env = await log.send("r1", "hello")
        await wait_for(lambda: receiver.events, what="delivery after 500s")
        assert [e["id"] for e in receiver.events] == [env.id]
        assert len(receiver.attempts) == 4 and len(set(receiver.attempts)) == 1
        assert receiver.bad_signatures == 0
        metrics = await scrape(hooks)
        failures = metric(
            metrics, "roomstream_hooks_delivery_failures_total", endpoint="ep", reason="500"
        )
        assert failures == 3
    finally:
        await receiver.stop()


async def test_silent_endpoint_is_dead_lettered_while_a_healthy_one_flows_then_replayed(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    silent = await Receiver(SECRET_A, mode="hang").start()
    healthy = await Receiver(SECRET_B).start()
    try:
        hooks = await start_hooks(cluster, {"ROOMSTREAM_DEAD_LETTER_AFTER_ATTEMPTS": "4"})
        await add_endpoint(hooks, "silent", silent.url, SECRET_A, ["message"])
        await add_endpoint(hooks, "healthy", healthy.url, SECRET_B, ["message"])
        log = Log(redis_client, namespace)
        await _rooms(log)
        sent = [(await log.send(ROOMS[i % 3], f"m{i}")).id for i in range(30)]
        # Every event reaches the healthy endpoint while the silent one is still being retried
        # (4 attempts of 1 s each at least): it is not held up behind it.
        await wait_for(lambda: healthy.unique_ids() >= set(sent), deadline_s=20, what="healthy")
        async with api(hooks) as client:
            dead = (await client.get("/endpoints/silent/dead-letters")).json()["dead_letters"]
        assert dead == []  # the silent endpoint has not been given up on yet
        await wait_for(lambda: silent.attempts, deadline_s=5, what="silent endpoint tried")
        assert not silent.events
        # The log did not wait for the silent endpoint either.
        await wait_for(log.hooks_group_settled, deadline_s=5, what="log acknowledged")
        more = [(await log.send(ROOMS[i % 3], f"n{i}")).id for i in range(10)]
        await wait_for(lambda: healthy.unique_ids() >= set(more), deadline_s=20, what="healthy 2")

        async def dead_ids() -> set[str]:
            ids: set[str] = set()
            after = 0
            async with api(hooks) as client:
                while True:
                    r = await client.get(
                        "/endpoints/silent/dead-letters", params={"after": after, "limit": 7}
                    )
                    page = r.json()
                    ids |= {d["event_id"] for d in page["dead_letters"]}
                    if page["next_after"] is None:
                        return ids
                    after = page["next_after"]

        async def all_dead() -> bool:
            return await dead_ids() == set(sent + more)

        await wait_for(all_dead, deadline_s=60, what="dead letters")
        async with api(hooks) as client:
            page = (await client.get("/endpoints/silent/dead-letters")).json()["dead_letters"]
        assert page[0]["attempts"] >= 4 and page[0]["last_error"] == "timeout"
        assert page[0]["event"]["id"] == page[0]["event_id"]

        silent.mode = "ok"
        async with api(hooks) as client:
            r = await client.post("/endpoints/silent/dead-letters/replay")
        assert r.json() == {"replayed": len(sent + more)}
        await wait_for(
            lambda: silent.unique_ids() >= set(sent + more), deadline_s=20, what="replayed"
        )
        assert_in_room_order(silent.first_seen())
        assert await dead_ids() == set()
        assert silent.bad_signatures == 0 and healthy.bad_signatures == 0
    finally:
        await silent.stop()
        await healthy.stop()


async def test_sigkill_mid_batch_loses_nothing(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    # Slow answers: the kill lands while a batch is in flight (sent, not yet acknowledged).
    receiver = await Receiver(SECRET_A, delay_s=0.3).start()
    try:
        env = {"ROOMSTREAM_DELIVERY_BATCH_MAX": "10"}
        hooks = await start_hooks(cluster, env)
        await add_endpoint(hooks, "ep", receiver.url, SECRET_A, ["message"])
        log = Log(redis_client, namespace)
        await _rooms(log)
        sent = [(await log.send(ROOMS[i % 3], f"m{i}")).id for i in range(200)]
        n = len(receiver.attempts)
        await wait_for(lambda: len(receiver.attempts) >= n + 3, what="some batches")
        hooks.kill()
        await wait_for(lambda: receiver.dropped >= 1, deadline_s=5, what="a batch cut mid-way")
        more = [(await log.send(ROOMS[i % 3], f"n{i}")).id for i in range(50)]
        partial = len(receiver.unique_ids())
        assert partial < len(sent)
        hooks = await start_hooks(cluster, env, name="hooks-2")
        receiver.delay_s = 0
        await wait_for(
            lambda: receiver.unique_ids() >= set(sent + more), deadline_s=60, what="everything"
        )
        got = receiver.first_seen()
        assert {e["id"] for e in got} == set(sent + more)
        assert_in_room_order(got)
        assert receiver.bad_signatures == 0
    finally:
        await receiver.stop()


async def test_two_instances_one_killed_under_traffic(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    """Two hooks processes share the work (one consumes the log, each endpoint is delivered by
    one); the first is SIGKILLed under traffic: the other takes over the log and the endpoints,
    and the receivers get every event once after de-dup, in order per room."""
    a_rcv = await Receiver(SECRET_A).start()
    b_rcv = await Receiver(SECRET_B).start()
    try:
        first = await start_hooks(cluster, {"ROOMSTREAM_NODE_ID": "hooks-a"}, name="hooks-a")
        await add_endpoint(first, "a", a_rcv.url, SECRET_A, ["message"])
        await add_endpoint(first, "b", b_rcv.url, SECRET_B, ["message"])
        await start_hooks(cluster, {"ROOMSTREAM_NODE_ID": "hooks-b"}, name="hooks-b")
        log = Log(redis_client, namespace)
        await _rooms(log)
        sent: list[str] = []

        async def traffic(n: int) -> None:
            for i in range(n):
                sent.append((await log.send(ROOMS[i % 3], f"m{len(sent)}")).id)
                await asyncio.sleep(0.01)

        await traffic(100)
        first.kill()
        await traffic(150)
        for rcv in (a_rcv, b_rcv):
            await wait_for(lambda r=rcv: r.unique_ids() >= set(sent), deadline_s=30, what="all")
            got = rcv.first_seen()
            assert [e["id"] for e in got] == [e["id"] for e in got if e["id"] in set(sent)]
            assert_in_room_order(got)
            assert rcv.bad_signatures == 0
    finally:
        await a_rcv.stop()
        await b_rcv.stop()


async def test_postgres_cut_under_traffic_loses_nothing(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis, database_url: str
) -> None:
    """Postgres unreachable for a few seconds (a TCP proxy of the test's own is cut) while
    messages keep coming: the consumer waits (the log keeps the entries), the workers restart,
    the leader re-takes its lock; afterwards the receiver has every event, in order per room."""
    proxy, via = await CuttableProxy.before_postgres(database_url)
    receiver = await Receiver(SECRET_A).start()
    try:
        hooks = await start_hooks(cluster, {"DATABASE_URL": via})
        await add_endpoint(hooks, "ep", receiver.url, SECRET_A, ["message"])
        log = Log(redis_client, namespace)
        await _rooms(log)
        sent = [(await log.send(ROOMS[i % 3], f"a{i}")).id for i in range(30)]
        await wait_for(lambda: receiver.unique_ids() >= set(sent), what="before the cut")
        await proxy.cut()
        for i in range(60):
            sent.append((await log.send(ROOMS[i % 3], f"b{i}")).id)
            await asyncio.sleep(0.05)
        await proxy.restore()
        await wait_for(
            lambda: receiver.unique_ids() >= set(sent), deadline_s=60, what="after the cut"
        )
        got = receiver.first_seen()
        assert {e["id"] for e in got} == set(sent)
        assert_in_room_order(got)
        assert hooks.running
    finally:
        await receiver.stop()
        await proxy.cut()
