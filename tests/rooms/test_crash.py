"""SIGKILL mid-batch, restart, take-over by another instance (XAUTOCLAIM) and two instances at
once: the projections end identical to an uninterrupted run of the same events (nothing lost,
nothing applied twice, nothing out of order)."""

from __future__ import annotations

import random

import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_kit.eventlog import EventLog, RoomCheck

from tests.rooms.helpers import (
    FAST_ENV,
    ROOMS,
    applied_total,
    conn_event,
    copy_log,
    extra_deployment,
    group_pending,
    keys,
    member_event,
    message,
    node_failed,
    poll,
    snapshot,
)

ROOM_IDS = [f"room-{i}" for i in range(8)]
USERS = [f"u{i}" for i in range(30)]


async def write_workload(
    redis: aioredis.Redis,
    namespace: str,
    n: int,
    rng: random.Random,
    nodes: tuple[str, ...] = ("g1", "g2"),
) -> int:
    """Append `n` mixed events (messages, joins, leaves, connects, disconnects) as the gateways
    would; returns how many sequenced events were appended."""
    log = EventLog(redis, keys(namespace))
    sequenced = 0
    live: list[tuple[str, str, str]] = []
    for room in ROOM_IDS:
        if not await redis.hexists(keys(namespace).seq(keys(namespace).room_shard(room)), room):
            env = Envelope(
                id=new_event_id(),
                kind=EventKind.ROOM_CREATED,
                room=room,
                user="owner",
                ts=now_ms(),
                data={"name": room, "kind": "public", "owner": "owner", "members": USERS[:3]},
            )
            assert (await log.append(env, room_check=RoomCheck.NEW)).ok
            sequenced += 1
    for i in range(n):
        roll = rng.random()
        room, user = rng.choice(ROOM_IDS), rng.choice(USERS)
        if roll < 0.55:
            env = message(room, user, f"m{i}")
        elif roll < 0.72:
            env = member_event(EventKind.MEMBER_JOINED, room, user, user)
        elif roll < 0.82:
            env = member_event(EventKind.MEMBER_LEFT, room, user, user)
        elif roll < 0.93 or not live:
            conn = (f"c{new_event_id()[-12:]}", user, rng.choice(nodes))
            live.append(conn)
            env = conn_event(EventKind.CONNECTED, conn[1], conn[2], conn[0])
        else:
            cid, cuser, node = live.pop(rng.randrange(len(live)))
            env = conn_event(EventKind.DISCONNECTED, cuser, node, cid, code=1000)
        result = await log.append(env)
        assert result.ok
        sequenced += env.sequenced
    return sequenced


async def settled(redis: aioredis.Redis, namespace: str, database_url: str, total: int) -> bool:
    """Every sequenced event applied and nothing pending or unread in the rooms group."""
    if await applied_total(database_url) != total or await group_pending(redis, namespace):
        return False
    for key in keys(namespace).all_logs():
        for info in await redis.xinfo_groups(key):
            if info["name"] == b"rooms" and (info["lag"] or 0) > 0:
                return False
    return True


async def kill_mid_batch(proc, redis, namespace, database_url, floor: int) -> None:
    """SIGKILL `proc` as soon as it has applied something beyond `floor`, while entries are
    still pending (read but not acknowledged): a crash in the middle of batches."""
    await poll(lambda: _above(database_url, floor), interval=0.02)
    proc.kill()
    assert await group_pending(redis, namespace) > 0, "the crash did not hit a batch in flight"


async def _above(database_url: str, floor: int) -> bool:
    return await applied_total(database_url) > floor


async def test_sigkill_mid_batch_restart_and_takeover_equal_an_uninterrupted_run(
    cluster, namespace, database_url, redis_client
):
    rng = random.Random(7)
    env = {**FAST_ENV, "ROOMSTREAM_BATCH_SIZE": "10"}
    total = await write_workload(redis_client, namespace, 1500, rng)

    # 1. Crash mid-batch, then the same instance restarts and drains its own pending entries.
    a = cluster.start(ROOMS, env={**env, "ROOMSTREAM_NODE_ID": "rooms-a"}, name="rooms-a")
    await kill_mid_batch(a, redis_client, namespace, database_url, 0)
    a.start()
    await poll(lambda: settled(redis_client, namespace, database_url, total))

    # 2. A stops cleanly; more events arrive; A restarts into the backlog and crashes in it;
    #    another instance takes the dead one's pending entries over (XAUTOCLAIM).
    a.terminate()
    total += await write_workload(redis_client, namespace, 1500, rng)
    progress = await applied_total(database_url)
    a.start()
    await kill_mid_batch(a, redis_client, namespace, database_url, progress)
    failed = node_failed("g2")
    assert (await EventLog(redis_client, keys(namespace)).append(failed)).ok
    cluster.start(ROOMS, env={**env, "ROOMSTREAM_NODE_ID": "rooms-b"}, name="rooms-b")
    await poll(lambda: settled(redis_client, namespace, database_url, total))

    # 3. Two live instances share the group: each sees holes where the other holds entries.
    a.start()
    total += await write_workload(redis_client, namespace, 1000, rng, ("g1", "g3"))
    await poll(lambda: settled(redis_client, namespace, database_url, total))
    crashed = await snapshot(redis_client, namespace, database_url)

    # 3. The reference: the same log, copied, consumed by one instance that never crashes.
    async with extra_deployment() as (ref_ns, ref_db):
        await copy_log(redis_client, namespace, ref_ns)
        cluster.start(
            ROOMS,
            env={
                **env,
                "ROOMSTREAM_NAMESPACE": ref_ns,
                "DATABASE_URL": ref_db,
                "ROOMSTREAM_BATCH_SIZE": "500",
            },
            name="rooms-ref",
        )
        await poll(lambda: settled(redis_client, ref_ns, ref_db, total))
        reference = await snapshot(redis_client, ref_ns, ref_db)

    assert crashed["postgres"]["rooms"] and crashed["postgres"]["memberships"]
    assert any(c[3] for c in crashed["postgres"]["connections"])
    assert not any(c[3] for c in crashed["postgres"]["connections"] if c[2] == "g2")
    for part in ("rooms", "memberships", "connections"):
        got, want = crashed["postgres"][part], reference["postgres"][part]
        assert got == want, (
            part,
            [x for x in got if x not in want],
            [x for x in want if x not in got],
        )
    assert crashed == reference
