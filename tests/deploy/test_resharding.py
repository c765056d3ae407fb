"""Routed delivery across a cluster resharding: the slot of a room's keys (the shard's hash tag:
its recent stream, seq hash, log — and its shard channel) moves to another master while
messages keep being appended. Redis 7 then tells the old owner's subscribers with an unasked
`sunsubscribe`; the gateway's router re-reads the topology, subscribes where the slot lives now
and fills what passed meanwhile from the room's recent stream. The socket must see every seq
once, in order — those appended before, during (the appender meets ASK / TRYAGAIN and retries
as a client does) and after the move.

The second case finalizes the move on the old owner first and tells the others a second later:
meanwhile the router's topology (read from a master that has not been told) still names the old
owner, which answers the SSUBSCRIBE with `MOVED` (and the target, still importing, points back
the same way) — `Router._error`: the router must still end subscribed on the new owner with no
seq lost. Each case has two rooms in the slot (two sunsubscribes at once, two refreshes)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from roomstream_kit.eventlog import EventLog, RoomCheck
from roomstream_kit.redis import AnyRedis, connect, redis_unavailable
from roomstream_kit.settings import CommonSettings
from websockets.asyncio.client import ClientConnection

from tests.conftest import Cluster
from tests.deploy.redis_cluster import RedisClusterProcesses
from tests.deploy.test_routing_on_cluster import GATEWAY, _env
from tests.gateway.helpers import client, recv
from tests.rooms.helpers import message
from tests.support import rooms as support_rooms
from tests.support.processes import ServiceProcess
from tests.support.routing import DEADLINE_S

APPEND_DEADLINE_S = 20.0
"""One append may retry (ASK / TRYAGAIN / CLUSTERDOWN during the move) this long."""


@dataclass
class Appender:
    """Appends messages to one room as a client would: retried while the cluster says "not
    now" (ASK / TRYAGAIN / CLUSTERDOWN during the move), each with a client message id so a
    retry after an unclear failure appends nothing twice."""

    log: EventLog
    room: str
    retried: list[str] = field(default_factory=list)
    """The errors a retry followed (the move's window was met)."""

    async def append(self, i: int) -> int:
        deadline = time.monotonic() + APPEND_DEADLINE_S
        while True:
            try:
                result = await self.log.append(
                    message(self.room, "bot", f"m{i}"),
                    room_check=RoomCheck.EXISTS,
                    dedupe_id=f"{self.room}-{i}",
                )
            except Exception as exc:
                if not redis_unavailable(exc) or time.monotonic() > deadline:
                    raise
                self.retried.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.02)
                continue
            assert result.ok and result.seq is not None, result
            return result.seq

    async def run(self, first: int, n: int, pause_s: float) -> list[int]:
        seqs = []
        for i in range(first, first + n):
            seqs.append(await self.append(i))
            await asyncio.sleep(pause_s)
        return seqs


def _rooms_and_target(
    rc: RedisClusterProcesses, settings: CommonSettings
) -> tuple[list[str], str, int, int]:
    """Two rooms of one shard (one slot) that is not on the gateways' seed node
    (`rc.ports[0]`, which then keeps a third view of the topology), a bystander room in
    another slot of the same master, the slot, and the other non-seed master as the target."""
    owners = rc.slot_owner()
    seed = rc.ports[0]
    by_slot: dict[int, list[str]] = {}
    for i in range(1000):
        room = f"move{i}"
        slot = key_slot(settings.keys.channel(room).encode())
        if owners[slot] == seed:
            continue
        rooms = by_slot.setdefault(slot, [])
        rooms.append(room)
        if len(rooms) == 2:
            source = owners[slot]
            target = next(p for p in rc.ports if p not in (seed, source))
            bystander = next(
                f"stay{j}"
                for j in range(1000)
                if (s := key_slot(settings.keys.channel(f"stay{j}").encode())) != slot
                and owners[s] == source
            )
            return rooms, bystander, slot, target
    raise AssertionError("no two rooms of one slot off the seed node")


async def _seqs_until(ws: ClientConnection, last: dict[str, int]) -> dict[str, list[int]]:
    """Seqs of each room's events this socket receives until it has every room's `last`."""
    got: dict[str, list[int]] = {room: [] for room in last}
    deadline = time.monotonic() + DEADLINE_S
    while any(not got[r] or got[r][-1] < seq for r, seq in last.items()):
        frame = await recv(ws, max(0.1, deadline - time.monotonic()))
        if frame.get("type") == "event" and frame.get("room") in got and frame.get("seq"):
            got[frame["room"]].append(frame["seq"])
    return got


async def _subscribers(port: int, channel: str) -> int:
    node = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        reply = await node.pubsub_shardnumsub(channel)
        return int(dict(reply)[channel.encode()])
    finally:
        await node.aclose()


async def _subscribed_on(port: int, channel: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while await _subscribers(port, channel) != 1:
        assert time.monotonic() < deadline, f"{channel} not subscribed on {port}"
        await asyncio.sleep(0.05)


async def _move_while_appending(
    cluster: Cluster,
    rc: RedisClusterProcesses,
    settings: CommonSettings,
    client_redis: AnyRedis,
    *,
    source_first: bool,
) -> str:
    """The scenario (two rooms of the moved slot and a bystander on the same master, whose
    connection a `MOVED` drops: it must lose nothing either; one socket in all three);
    returns the gateway's log tail."""
    gw = cluster.start(GATEWAY, env=_env(rc, settings))
    keys = settings.keys
    moving, bystander, slot, target = _rooms_and_target(rc, settings)
    rooms = [*moving, bystander]
    for room in rooms:
        await support_rooms.create_room(client_redis, keys, room, "ann", members=["bob"])
    # One client per appender, as separate publishers would be (appenders sharing one redis-py
    # cluster client during the stale-topology window of the MOVED test have met a race in
    # redis-py's reinitialisation: AttributeError on a connection torn down under it).
    publishers = [connect(settings) for _ in rooms]
    try:
        return await _scenario(gw, rc, settings, rooms, slot, target, publishers, source_first)
    finally:
        for redis in publishers:
            await redis.aclose()


async def _scenario(
    gw: ServiceProcess,
    rc: RedisClusterProcesses,
    settings: CommonSettings,
    rooms: list[str],
    slot: int,
    target: int,
    publishers: list[AnyRedis],
    source_first: bool,
) -> str:
    keys = settings.keys
    source = rc.slot_owner()[slot]
    bob, welcome = await client(gw.ws_url, "bob")
    assert welcome["rooms"] == {room: {"seq": 1} for room in rooms}, welcome
    for room in rooms:
        await _subscribed_on(source, keys.channel(room))
    appenders = [
        Appender(EventLog(r, keys), room) for r, room in zip(publishers, rooms, strict=True)
    ]
    before = [await a.append(i) for a in appenders for i in range(5)][4::5]
    assert await _seqs_until(bob, dict(zip(rooms, before, strict=True))) == {
        room: list(range(2, 7)) for room in rooms
    }
    appending = [asyncio.ensure_future(a.run(5, 40, pause_s=0.02)) for a in appenders]
    try:
        await asyncio.sleep(0.2)  # some appends on the old owner first
        moved = await asyncio.to_thread(
            rc.migrate_slot,
            slot,
            target,
            batch=2,
            pause_s=0.05,
            finalize=[source, target] if source_first else None,
            finalize_pause_s=1.0 if source_first else 0.0,
        )
        async with asyncio.timeout(60):
            during = await asyncio.gather(*appending)
    finally:
        for task in appending:
            task.cancel()
    assert moved >= 8  # log, seq hash, kinds, and each room's recent stream and roster
    assert rc.slot_owner()[slot] == target
    after = [[await a.append(100 + i) for i in range(5)] for a in appenders]
    for d, a in zip(during, after, strict=True):
        assert d + a == list(range(7, 52)), (d, a)
    got = await _seqs_until(bob, dict.fromkeys(rooms, 51))
    retried = [a.retried for a in appenders]
    for room in rooms:
        want = list(range(7, 52))
        assert got[room] == want, {
            "missing": sorted(set(want) - set(got[room])),
            "retried": retried,
        }
    with contextlib.suppress(TimeoutError):  # nothing more: no seq twice
        extra = await recv(bob, 0.5)
        assert extra.get("type") != "event", extra
    # The router is subscribed on the new owner, no more on the old one.
    for room in rooms[:2]:
        await _subscribed_on(target, keys.channel(room))
        assert await _subscribers(source, keys.channel(room)) == 0
    await _subscribed_on(source, keys.channel(rooms[2]))
    await bob.close()
    return gw.tail(400)


@pytest.mark.parametrize(
    ("source_first", "logged"),
    [(False, "its slot moved"), (True, "MOVED")],
    ids=["unasked-sunsubscribe", "moved-reply"],
)
async def test_a_moved_slot_is_resubscribed_and_filled(
    cluster: Cluster,
    redis_cluster: RedisClusterProcesses,
    settings: CommonSettings,
    client: AnyRedis,
    source_first: bool,
    logged: str,
) -> None:
    """Every seq once, in order, across the move; the gateway says which path it took."""
    tail = await _move_while_appending(
        cluster, redis_cluster, settings, client, source_first=source_first
    )
    assert logged in tail, tail
