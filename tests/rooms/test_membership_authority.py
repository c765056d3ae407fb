"""Membership authority (issue 9, items 1 and 2), end to end with real gateway, rooms and history
processes: a removed member's socket cannot get back into a private room by racing the rooms
projection, and a room created through the API reaches the open sockets of owner and members.

The roster the append script keeps is the authority (docs/architecture.md, "Where membership
authority lives"); these tests drive the races that a read-model decision lost."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.gateway.helpers import DEADLINE_S, client, events_of, recv_until, request
from tests.rooms.helpers import FAST_ENV, ROOMS, api, auth, keys, poll

GATEWAY = "roomstream_gateway"
HISTORY = "roomstream_history"
REPEAT = 20


def start_deployment(cluster: Any, gateways: int = 1) -> tuple[Any, list[Any]]:
    rooms = cluster.start(ROOMS, env=FAST_ENV, name="rooms")
    history = cluster.start(HISTORY, name="history")
    gw_env = {"ROOMSTREAM_ROOMS_URL": rooms.url, "ROOMSTREAM_HISTORY_URL": history.url}
    gws = [
        cluster.start(
            GATEWAY,
            env={**gw_env, "ROOMSTREAM_NODE_ID": f"gw-{n}", "ROOMSTREAM_SEND_RATE_PER_S": "1000"},
            name=f"gw-{n}",
            ready_path="/healthz",
        )
        for n in "ab"[:gateways]
    ]
    return rooms, gws


class Recorder:
    """Every frame one socket receives, in order (so nothing of a room can slip by unseen)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), DEADLINE_S))
        self.frames.append(frame)
        return frame

    async def until(self, pred: Any) -> dict[str, Any]:
        while True:
            frame = await self.next()
            if pred(frame):
                return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def reply(self, ref: str) -> dict[str, Any]:
        return await self.until(lambda f: f.get("ref") == ref)

    async def ask(self, frame: dict[str, Any]) -> dict[str, Any]:
        await self.send(frame)
        return await self.reply(frame["ref"])

    def mark(self) -> int:
        return len(self.frames)

    def of_room_since(self, mark: int, room: str) -> list[dict[str, Any]]:
        return [f for f in self.frames[mark:] if f.get("room") == room]


async def assert_locked_out(y: Recorder, room: str, tag: str) -> None:
    """history, presence, send, edit and typing of the private room: all `forbidden`."""
    for frame in (
        {"type": "history", "room": room},
        {"type": "presence", "room": room},
        {"type": "send", "room": room, "text": "sneak", "id": f"sneak-{tag}"},
        {"type": "edit", "room": room, "seq": 1, "text": "sneak"},
    ):
        reply = await y.ask({**frame, "ref": f"{frame['type']}-{tag}"})
        assert reply["type"] == "error" and reply["code"] == "forbidden", (frame, reply)


async def assert_receives_nothing_more(
    y: Recorder, owner: Any, room: str, mark: int, left_seq: int, tag: str
) -> None:
    """The owner's next message reaches the owner's socket (same gateway: the same tail batch
    went to every socket there), then a ping on Y's socket: nothing of the room after Y's own
    `member_left` (seq `left_seq`) came to Y, and no `joined`."""
    ack = await request(owner, {"type": "send", "room": room, "text": "after", "id": f"o-{tag}"})
    assert ack["type"] == "ack", ack
    got = await events_of(owner, room, 1)
    assert got[0]["seq"] == ack["seq"]
    await y.ask({"type": "ping", "ref": f"quiet-{tag}"})
    leaked = [
        f
        for f in y.of_room_since(mark, room)
        if f["type"] == "joined" or (f["type"] == "event" and f["seq"] > left_seq)
    ]
    assert leaked == [], leaked


async def test_join_sent_on_seeing_member_left_is_refused(cluster, namespace):
    """Sequence 1: the owner DELETEs Y; Y's socket sends `join` as soon as it sees its
    `member_left` (before the rooms projection may have applied it)."""
    rooms, (gw,) = start_deployment(cluster)
    owner, _ = await client(gw.ws_url, "olga")
    y_ws, _ = await client(gw.ws_url, "yuri")
    y = Recorder(y_ws)
    async with api(rooms.url) as http:
        for i in range(REPEAT):
            room = f"vault-{i}"
            body = {"id": room, "name": room, "kind": "private", "members": ["yuri"]}
            r = await http.post("/rooms", json=body, headers=auth("olga"))
            assert r.status_code == 201, r.text
            joined = await y.ask({"type": "join", "room": room, "ref": f"j0-{i}"})
            assert joined["type"] == "joined", joined

            delete = asyncio.create_task(
                http.delete(f"/rooms/{room}/members/yuri", headers=auth("olga"))
            )
            left = await y.until(
                lambda f, room=room: f.get("kind") == "member_left" and f.get("room") == room
            )
            mark = y.mark()
            await y.send({"type": "join", "room": room, "ref": f"j-{i}"})
            reply = await y.reply(f"j-{i}")
            assert reply["type"] == "error" and reply["code"] == "forbidden", (i, reply)
            assert (await delete).status_code == 204
            await assert_locked_out(y, room, str(i))
            assert left["user"] == "yuri"
            await assert_receives_nothing_more(y, owner, room, mark, left["seq"], str(i))
            # The owner's DELETE took effect: the API does not list Y.
            r = await http.get(f"/rooms/{room}/members", headers=auth("olga"))
            assert r.json() == {"members": ["olga"]}
            r = await http.get(f"/rooms/{room}/members", headers=auth("yuri"))
            assert r.status_code == 403


async def test_pipelined_leave_then_join_is_refused(cluster, namespace):
    """Sequence 2: a member sends `leave R` and `join R` back to back."""
    rooms, (gw,) = start_deployment(cluster)
    owner, _ = await client(gw.ws_url, "olga")
    y_ws, _ = await client(gw.ws_url, "yuri")
    y = Recorder(y_ws)
    async with api(rooms.url) as http:
        for i in range(REPEAT):
            room = f"den-{i}"
            body = {"id": room, "name": room, "kind": "private", "members": ["yuri"]}
            r = await http.post("/rooms", json=body, headers=auth("olga"))
            assert r.status_code == 201, r.text
            joined = await y.ask({"type": "join", "room": room, "ref": f"j0-{i}"})
            assert joined["type"] == "joined", joined

            mark = y.mark()
            # Two frames written back to back: the join does not wait for the leave's ack.
            await y.send({"type": "leave", "room": room, "ref": f"l-{i}"})
            await y.send({"type": "join", "room": room, "ref": f"j-{i}"})
            leave = await y.reply(f"l-{i}")
            assert leave["type"] == "ack" and leave["seq"], leave
            reply = await y.reply(f"j-{i}")
            assert reply["type"] == "error" and reply["code"] == "forbidden", (i, reply)
            await assert_locked_out(y, room, str(i))

            # The owner's DELETE takes effect (Y is not a member: nothing to remove).
            r = await http.delete(f"/rooms/{room}/members/yuri", headers=auth("olga"))
            assert r.status_code == 204
            r = await http.get(f"/rooms/{room}/members", headers=auth("olga"))
            assert r.json() == {"members": ["olga"]}
            await assert_receives_nothing_more(y, owner, room, mark, leave["seq"], str(i))


async def sequenced(ws: Any, room: str, count: int) -> list[dict[str, Any]]:
    """The next `count` sequenced events of `room` (presence events have no seq)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        got += [e for e in await events_of(ws, room, 1, kind=None) if "seq" in e]
    return got


async def test_room_created_through_the_api_reaches_open_sockets(cluster, namespace):
    """Item 2: owner and members are connected (on two gateways) when `POST /rooms` creates the
    room: the owner may send at once, the members receive without reconnecting or joining."""
    rooms, (gw_a, gw_b) = start_deployment(cluster, gateways=2)
    owner, welcome = await client(gw_a.ws_url, "olga")
    assert welcome["rooms"] == {}
    bob, _ = await client(gw_a.ws_url, "bob")
    carol, _ = await client(gw_b.ws_url, "carol")
    mallory, _ = await client(gw_b.ws_url, "mallory")
    async with api(rooms.url) as http:
        for kind in ("private", "public"):
            room = f"new-{kind}"
            body = {"id": room, "name": room, "kind": kind, "members": ["bob", "carol"]}
            r = await http.post("/rooms", json=body, headers=auth("olga"))
            assert r.status_code == 201, r.text
            ack = await request(owner, {"type": "send", "room": room, "text": "hi", "id": room})
            assert ack["type"] == "ack" and ack["seq"] == 2, ack
            for ws in (owner, bob, carol):
                got = await sequenced(ws, room, 2)
                assert [(e["seq"], e["kind"]) for e in got] == [(1, "room_created"), (2, "message")]
            reply = await request(carol, {"type": "send", "room": room, "text": "yo", "id": room})
            assert reply["type"] == "ack" and reply["seq"] == 3, reply
            assert (await events_of(bob, room, 1))[0]["data"]["text"] == "yo"
    # A user who is not in `members` received nothing.
    await mallory.send(orjson.dumps({"type": "ping", "ref": "quiet"}).decode())
    frames = await recv_until(mallory, lambda f: f.get("ref") == "quiet")
    assert [f for f in frames if str(f.get("room", "")).startswith("new-")] == []


async def test_room_from_before_rosters_is_seeded_from_the_projection(
    cluster, namespace, redis_client
):
    """A room created before rosters existed has none (simulated by deleting its roster keys):
    the gateway's first check seeds it from the rooms projection through the rooms API, with the
    members the projection has, and a removed member stays removed."""
    rooms, (gw,) = start_deployment(cluster)
    k = keys(namespace)
    async with api(rooms.url) as http:
        body = {"id": "old", "name": "Old", "kind": "private", "members": ["bob", "carol"]}
        assert (await http.post("/rooms", json=body, headers=auth("olga"))).status_code == 201
        r = await http.delete("/rooms/old/members/carol", headers=auth("olga"))
        assert r.status_code == 204
        await redis_client.hdel(k.kinds(k.room_shard("old")), "old")
        await redis_client.delete(k.roster("old"))

        carol, _ = await client(gw.ws_url, "carol")
        reply = await request(carol, {"type": "join", "room": "old"})
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        assert await redis_client.hget(k.kinds(k.room_shard("old")), "old") == b"private"
        assert await redis_client.smembers(k.roster("old")) == {b"olga", b"bob"}
        bob, welcome = await client(gw.ws_url, "bob")
        assert "old" in welcome["rooms"]
        ack = await request(bob, {"type": "send", "room": "old", "text": "still here", "id": "1"})
        assert ack["type"] == "ack", ack

        # The rooms service seeds every room without a roster at start-up too.
        await redis_client.hdel(k.kinds(k.room_shard("old")), "old")
        await redis_client.delete(k.roster("old"))
        rooms.terminate()
        rooms.start()

        async def seeded() -> bool:
            return await redis_client.hget(k.kinds(k.room_shard("old")), "old") == b"private"

        await poll(seeded)
        assert await redis_client.smembers(k.roster("old")) == {b"olga", b"bob"}
