"""Scenarios of routed delivery (each gateway receives only its sockets' rooms), shared by the
single-Redis tests (tests/gateway/test_routing.py) and the Redis Cluster ones
(tests/deploy/test_routing_on_cluster.py): the same assertions on both."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import httpx
import orjson
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import APPEND_SCRIPT, StreamKeys
from roomstream_kit.eventlog import EventLog, RoomCheck
from roomstream_kit.redis import AnyRedis
from websockets.asyncio.client import ClientConnection

from tests.gateway.helpers import _backlog, client, close_code, recv, request
from tests.hooks.helpers import metric
from tests.rooms.helpers import message
from tests.support import rooms as support_rooms
from tests.support.processes import ServiceProcess

DEADLINE_S = 30.0


async def append_messages(log: EventLog, room: str, n: int, pause_s: float = 0.0) -> list[int]:
    """`n` messages appended to `room` as the gateway would (seqs returned)."""
    seqs = []
    for i in range(n):
        result = await log.append(message(room, "bot", f"m{i}"), room_check=RoomCheck.EXISTS)
        assert result.ok and result.seq is not None, result
        seqs.append(result.seq)
        if pause_s:
            await asyncio.sleep(pause_s)
    return seqs


async def received(gateway: ServiceProcess) -> float:
    """`roomstream_gateway_events_received_total` of one gateway (0 before the first event)."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as http:
        text = (await http.get("/metrics")).text
    return metric(text, "roomstream_gateway_events_received_total") or 0.0


async def fills(gateway: ServiceProcess) -> float:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as http:
        text = (await http.get("/metrics")).text
    return metric(text, "roomstream_gateway_route_fills_total") or 0.0


async def seqs_until(
    ws: ClientConnection, room: str, last: int, within_s: float = DEADLINE_S
) -> list[int]:
    """Seqs of `room`'s events this socket receives until it has seq `last`."""
    got: list[int] = []
    deadline = time.monotonic() + within_s
    while not got or got[-1] < last:
        frame = await recv(ws, max(0.1, deadline - time.monotonic()))
        if frame.get("type") == "event" and frame.get("room") == room and frame.get("seq"):
            got.append(frame["seq"])
    return got


async def only_their_rooms(
    redis: AnyRedis,
    keys: StreamKeys,
    gateways: list[ServiceProcess],
    idle: ServiceProcess,
    rooms: list[str] | None = None,
) -> None:
    """Gateway i has two sockets in room i only; `idle` has none. Each gateway receives exactly
    its room's events (sequenced messages and a live `typing`), the idle one none; every socket
    gets its room's events once, in order."""
    log = EventLog(redis, keys)
    rooms = rooms or [f"route{i}" for i in range(len(gateways))]
    sockets: list[list[ClientConnection]] = []
    for i, (room, gw) in enumerate(zip(rooms, gateways, strict=True)):
        users = [f"u{i}a", f"u{i}b"]
        await support_rooms.create_room(redis, keys, room, users[0], members=users)
        pair = []
        for user in users:
            ws, welcome = await client(gw.ws_url, user)
            assert welcome["rooms"] == {room: {"seq": 1}}, welcome
            pair.append(ws)
        sockets.append(pair)
    before = [await received(gw) for gw in (*gateways, idle)]
    n = 25
    for room in rooms:
        await append_messages(log, room, n)
    # One live event (no seq) travels the room's channel too.
    typist = sockets[0][0]
    await typist.send(orjson.dumps({"type": "typing", "room": rooms[0]}).decode())
    for i, room in enumerate(rooms):
        for ws in sockets[i]:
            assert await seqs_until(ws, room, n + 1) == list(range(2, n + 2))
    typing = []
    while not typing:
        frame = await recv(sockets[0][1])
        if frame.get("type") == "typing":
            typing.append(frame)
    after = [await received(gw) for gw in (*gateways, idle)]
    got = [a - b for a, b in zip(after, before, strict=True)]
    assert got == [n + 1, n, n, 0], got  # the first room also carried the typing event
    for pair in sockets:
        for ws in pair:
            await ws.close()


async def join_leave_race(
    redis: AnyRedis,
    keys: StreamKeys,
    stay_gw: ServiceProcess,
    churn_gw: ServiceProcess,
    room: str = "race",
) -> None:
    """While messages are appended, a socket on `churn_gw` (its only one in the room, so the
    gateway subscribes and unsubscribes the room's channel each time) joins with `since`, reads a
    little and leaves, again and again; another reconnects (welcome) again and again. Both end
    up with every seq from their first join on, once, in order, as does a member that stays on
    `stay_gw`."""
    log = EventLog(redis, keys)
    await support_rooms.create_room(redis, keys, room, "owner", members=["stay", "again"])
    stay, _ = await client(stay_gw.ws_url, "stay")
    churn, _ = await client(churn_gw.ws_url, "churn")
    total = 300
    writer = asyncio.create_task(append_messages(log, room, total, pause_s=0.004))
    last_seq = 1 + total  # plus the churner's member_joined / member_left events, counted below

    seen: list[int] = []
    since = 1
    rounds = 0
    while not writer.done() and rounds < 40:
        rounds += 1
        joined = await request(churn, {"type": "join", "room": room, "since": since})
        assert joined["type"] == "joined", joined
        got = backlog(churn, room) + await read_some(churn, room, joined["seq"] + 2, 1.0)
        left = await request(churn, {"type": "leave", "room": room})
        assert left["type"] == "ack", left
        got += backlog(churn, room)
        seen += got
        since = max([since, *got])
    await writer
    # The last join collects the rest (a replay of what passed since `since`).
    joined = await request(churn, {"type": "join", "room": room, "since": since})
    final = joined["seq"]
    seen += backlog(churn, room)
    if final > max([since, *seen]):
        seen += await seqs_until(churn, room, final)
    assert rounds > 3
    assert seen == list(range(2, final + 1)), _gaps(seen)

    # The one that stayed: everything, once, in order (the churner's joins and leaves included).
    assert await seqs_until(stay, room, final) == list(range(2, final + 1))
    assert final >= last_seq
    for ws in (stay, churn):
        await ws.close()


async def reconnect_race(
    redis: AnyRedis,
    keys: StreamKeys,
    churn_gw: ServiceProcess,
    room: str = "again",
    rounds: int = 12,
) -> None:
    """A member reconnects again and again to a gateway where it is the room's only socket
    (welcome subscribes the room's channel, the close leaves it) while messages flow; resuming
    with `join since` each time, it ends with every seq once (in order within the replay and
    within the live part of each connection)."""
    log = EventLog(redis, keys)
    await support_rooms.create_room(redis, keys, room, "owner", members=["back"])
    writer = asyncio.create_task(append_messages(log, room, 200, pause_s=0.005))
    seen: list[int] = []
    since = 1
    for _ in range(rounds):
        ws, _ = await client(churn_gw.ws_url, "back")
        joined = await request(ws, {"type": "join", "room": room, "since": since})
        assert joined["type"] == "joined", joined
        # Live events after the welcome may precede `joined` (the welcome subscribed the
        # socket); the join replays only what lies before them: each part in order.
        live = backlog(ws, room)
        after = await read_some(ws, room, joined["seq"] + 1, 1.0)
        assert live == sorted(live) and after == sorted(after), (live, after)
        seen += live + after
        since = max([since, *live, *after])
        await ws.close()
    await writer
    ws, _ = await client(churn_gw.ws_url, "back")
    joined = await request(ws, {"type": "join", "room": room, "since": since})
    final = joined["seq"]
    seen += backlog(ws, room)
    if final > max([since, *seen]):
        seen += await seqs_until(ws, room, final)
    assert sorted(seen) == list(range(2, final + 1)), _gaps(sorted(seen))
    await ws.close()


async def killed_pubsub_is_healed(
    node: AnyRedis,
    redis: AnyRedis,
    keys: StreamKeys,
    gw: ServiceProcess,
    room: str = "heal",
    revoke: bool = False,
) -> None:
    """The gateway's pub/sub connections to `node` (the room's Redis server) are killed and 10
    events appended in the same atomic step (they reach no subscriber: only the fill can deliver
    them); the socket still gets every seq once, in order, and the control channel works again
    (a kick closes the socket). With `revoke` (a single server: the user's revocation key is in
    another slot on a cluster) a revocation appended in that step, lost on the control channel,
    still closes the revoked user's socket (4401: the gateway re-reads the cutoffs)."""
    await support_rooms.create_room(redis, keys, room, "ann", members=["bob"])
    bob, _ = await client(gw.ws_url, "bob")
    carl, _ = await client(gw.ws_url, "carl")
    log = EventLog(redis, keys)
    await append_messages(log, room, 5)
    assert await seqs_until(bob, room, 6) == list(range(2, 7))
    before = await fills(gw)
    async with node.pipeline(transaction=True) as pipe:
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        for i in range(10):
            k, args = log._script_call(message(room, "bot", f"x{i}"), RoomCheck.EXISTS, None, None)
            pipe.eval(APPEND_SCRIPT, len(k), *k, *args)
        if revoke:
            cutoff = time.time() + 1
            pipe.set(keys.revoked("carl"), str(cutoff))
            revoked = Envelope(
                id=new_event_id(),
                kind=EventKind.TOKENS_REVOKED,
                user="carl",
                ts=now_ms(),
                data={"before": cutoff, "by": "admin"},
            )
            k, args = log._script_call(revoked, RoomCheck.NONE, None, None)
            pipe.eval(APPEND_SCRIPT, len(k), *k, *args)
        replies = await pipe.execute()
    if revoke:
        assert await close_code(carl) == 4401
    assert replies[0] >= 1  # at least the gateway's connection was killed
    await append_messages(log, room, 5)
    assert await seqs_until(bob, room, 21) == list(range(7, 22))
    assert await fills(gw) - before >= 10
    kicked = Envelope(
        id=new_event_id(),
        kind=EventKind.USER_KICKED,
        user="bob",
        ts=now_ms(),
        data={"by": "admin", "reason": "test"},
    )
    assert (await log.append(kicked)).ok
    assert await close_code(bob) == 1008
    await carl.close()


async def read_some(ws: ClientConnection, room: str, upto: int, within_s: float) -> list[int]:
    """Seqs of `room`'s events received until seq `upto` or `within_s` passed (no failure:
    the callers check the union of what they read)."""
    got: list[int] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within_s):
            while not got or got[-1] < upto:
                frame = await recv(ws)
                if frame.get("type") == "event" and frame.get("room") == room and frame.get("seq"):
                    got.append(frame["seq"])
    return got


def backlog(ws: ClientConnection, room: str) -> list[int]:
    """Seqs of `room` that `request` read past while waiting for its reply (taken out)."""
    frames = _backlog.pop(ws, None) or []
    return [f["seq"] for f in frames if f.get("type") == "event" and f.get("room") == room]


def _gaps(seqs: list[int]) -> dict[str, Any]:
    dups = sorted({s for s in seqs if seqs.count(s) > 1})
    missing = sorted(set(range(min(seqs, default=0), max(seqs, default=0) + 1)) - set(seqs))
    unordered = [b for a, b in itertools.pairwise(seqs) if b <= a]
    return {"duplicates": dups, "missing": missing, "out_of_order": unordered[:10]}
