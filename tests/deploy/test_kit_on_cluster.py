"""The shared plumbing (`roomstream_kit`) on a real 3-master Redis Cluster.

Covers what a cluster changes: the append script's keys must share one slot per shard and its
EVALSHA must be routed to the slot's master; the consumer must read every shard through
FastStream's cluster broker; the heartbeat's pipeline spans slots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.crc import key_slot
from roomstream_contracts.events import Envelope, EventKind
from roomstream_kit.consumer import LogConsumer, LogEntry
from roomstream_kit.eventlog import AppendStatus, EventLog, OwnerCheck, RoomCheck
from roomstream_kit.node import Heartbeat
from roomstream_kit.redis import AnyRedis, connect, same_slot_groups
from roomstream_kit.settings import CommonSettings

from tests.deploy.redis_cluster import RedisClusterProcesses
from tests.support.events import envelope


def test_shards_spread_over_every_master(
    redis_cluster: RedisClusterProcesses, settings: CommonSettings
) -> None:
    """Every key of one shard lives in one slot; the shards together use all three masters."""
    keys = settings.keys
    owners = redis_cluster.slot_owner()
    used = set()
    for shard in range(keys.shards):
        room = next(f"r{i}" for i in range(10_000) if keys.room_shard(f"r{i}") == shard)
        slots = {
            key_slot(k.encode())
            for k in (
                keys.log(shard),
                keys.seq(shard),
                keys.recent(room),
                keys.dedupe(room, "u", "c"),
                keys.room(room),
                keys.members(room),
                keys.presence(room),
            )
        }
        assert len(slots) == 1, (shard, slots)
        used.add(owners[slots.pop()])
    assert used == set(redis_cluster.ports)


async def test_append_script_on_cluster(client: AnyRedis, settings: CommonSettings) -> None:
    """Room checks, gapless seqs, dedupe and owner checks work on every shard of a cluster."""
    log = EventLog.from_settings(client, settings)
    rooms = [f"room{i}" for i in range(24)]  # covers all 8 shards
    assert {settings.keys.room_shard(r) for r in rooms} == set(range(settings.shards))
    for room in rooms:
        missing = await log.append(
            envelope(EventKind.MESSAGE, room, "ann", text="x", client_id="c0"),
            room_check=RoomCheck.EXISTS,
        )
        assert missing.status is AppendStatus.NO_ROOM
        created = await log.append(
            envelope(EventKind.ROOM_CREATED, room, "ann", name=room, kind="public", owner="ann"),
            room_check=RoomCheck.NEW,
        )
        assert (created.status, created.seq) == (AppendStatus.OK, 1)
        again = await log.append(
            envelope(EventKind.ROOM_CREATED, room, "ann", name=room, kind="public", owner="ann"),
            room_check=RoomCheck.NEW,
        )
        assert again.status is AppendStatus.ROOM_EXISTS

    async def send(room: str, n: int) -> int | None:
        # Client ids are unique per user (across rooms): one id per room and message.
        res = await log.append(
            envelope(EventKind.MESSAGE, room, "ann", text=f"m{n}", client_id=f"{room}-c{n}"),
            room_check=RoomCheck.EXISTS,
            dedupe_id=f"{room}-c{n}",
        )
        assert res.status is AppendStatus.OK
        return res.seq

    seqs = await asyncio.gather(*(send(room, n) for room in rooms for n in range(10)))
    assert None not in seqs
    for i, room in enumerate(rooms):
        assert sorted(s or 0 for s in seqs[i * 10 : (i + 1) * 10]) == list(range(2, 12)), room

    room = rooms[0]
    dup = await log.append(
        envelope(EventKind.MESSAGE, room, "ann", text="m3", client_id=f"{room}-c3"),
        room_check=RoomCheck.EXISTS,
        dedupe_id=f"{room}-c3",
    )
    assert dup.status is AppendStatus.DUPLICATE
    assert dup.seq in seqs[:10]
    not_owner = await log.append(
        envelope(EventKind.MESSAGE_DELETED, room, "bob", target_seq=2),
        owner_check=OwnerCheck(2, "bob"),
    )
    assert not_owner.status is AppendStatus.NOT_OWNER
    deleted = await log.append(
        envelope(EventKind.MESSAGE_DELETED, room, "ann", target_seq=2),
        owner_check=OwnerCheck(2, "ann"),
    )
    assert (deleted.status, deleted.seq) == (AppendStatus.OK, 12)
    recent: Any = await client.xrange(settings.keys.recent(room), "-", "+")
    assert [int(eid.split(b"-")[0]) for eid, _ in recent] == list(range(1, 13))


async def test_consumer_reads_every_shard_of_a_cluster(
    client: AnyRedis, settings: CommonSettings
) -> None:
    """`LogConsumer` (FastStream's cluster broker) gets every event once, each room in order."""
    log = EventLog.from_settings(client, settings)
    rooms = [f"c{i}" for i in range(16)]
    for room in rooms:
        await log.append(
            envelope(EventKind.ROOM_CREATED, room, "ann", name=room, kind="public", owner="ann"),
            room_check=RoomCheck.NEW,
        )
    seen: list[Envelope] = []

    async def handler(batch: Sequence[LogEntry]) -> None:
        seen.extend(entry.envelope for entry in batch)

    consumer = LogConsumer(
        settings, client, group="deploytest", consumer="c1", handler=handler, poll_ms=50
    )
    await consumer.start()
    try:
        for n in range(5):
            for room in rooms:
                await log.append(
                    envelope(EventKind.MESSAGE, room, "ann", text=f"{n}", client_id=f"{room}{n}")
                )
        expected = len(rooms) * 6
        for _ in range(600):
            if len(seen) >= expected:
                break
            await asyncio.sleep(0.1)
        by_room: dict[str, list[int]] = {}
        for env in seen:
            assert env.room is not None and env.seq is not None
            by_room.setdefault(env.room, []).append(env.seq)
        assert by_room == {room: list(range(1, 7)) for room in rooms}
        # everything was acknowledged: nothing pending in any shard
        for stream in settings.keys.all_logs():
            pending = await client.xpending(stream, "deploytest")
            assert pending["pending"] == 0, stream
    finally:
        await consumer.stop()


async def test_reclaim_job_takes_over_a_dead_consumers_entries_on_every_master(
    client: AnyRedis, settings: CommonSettings
) -> None:
    """The consumer's reclaim job (XAUTOCLAIM per shard, shards on different masters) takes over
    what a dead consumer read and never acknowledged."""
    log = EventLog.from_settings(client, settings)
    rooms = [f"r{i}" for i in range(16)]
    seen: list[str] = []

    async def handle(batch: Sequence[LogEntry]) -> None:
        seen.extend(entry.envelope.id for entry in batch)

    consumer = LogConsumer(
        settings,
        client,
        group="reclaimtest",
        consumer="c1",
        handler=handle,
        poll_ms=50,
        reclaim_idle_ms=200,
        reclaim_interval_ms=100,
    )
    await consumer.ensure_groups()
    ids = []
    for room in rooms:
        env = envelope(EventKind.MESSAGE, room, "ann", text="x", client_id=room)
        await log.append(env)
        ids.append(env.id)
    for stream in settings.keys.all_logs():  # the dead consumer's reads, never acknowledged
        await client.xreadgroup("reclaimtest", "dead", {stream: ">"}, count=100)
    await consumer.start()
    try:
        for _ in range(600):
            if sorted(seen) == sorted(ids):
                break
            await asyncio.sleep(0.1)
        assert sorted(seen) == sorted(ids)
        for _ in range(100):
            pending = [
                (await client.xpending(stream, "reclaimtest"))["pending"]
                for stream in settings.keys.all_logs()
            ]
            if not any(pending):
                break
            await asyncio.sleep(0.1)
        assert not any(pending)
    finally:
        await consumer.stop()


async def test_heartbeat_pipeline_across_slots(client: AnyRedis, settings: CommonSettings) -> None:
    """The heartbeat writes (and on a clean stop removes) keys that live on different masters."""
    beat = Heartbeat(client, settings.keys, "gw-1", "gateway", interval_s=0.1, ttl_s=5, stats=dict)
    await beat.beat()
    assert (await client.hget(settings.keys.node("gw-1"), "kind")) == b"gateway"
    assert await client.zscore(settings.keys.nodes(), "gw-1") is not None
    await beat.stop(deregister=True)
    assert not await client.exists(settings.keys.node("gw-1"))
    assert await client.zscore(settings.keys.nodes(), "gw-1") is None


async def test_same_slot_groups_split_the_shards(
    client: AnyRedis, settings: CommonSettings
) -> None:
    """One XREAD per group works on a cluster; one group per shard there, one in all on a server."""
    streams = settings.keys.all_logs()
    groups = same_slot_groups(client, streams)
    assert sorted(key for group in groups for key in group) == sorted(streams)
    assert len(groups) == settings.shards
    log = EventLog.from_settings(client, settings)
    await log.append(envelope(EventKind.TYPING, "lobby", "ann"))
    got: list[Any] = []
    for group in groups:
        reply: Any = await client.xread(dict.fromkeys(group, "0-0"), count=10)
        got.extend(entry for _, entries in reply for entry in entries)
    assert len(got) == 1
    single = connect(CommonSettings())
    try:
        assert same_slot_groups(single, streams) == [streams]
    finally:
        await single.aclose()
