"""End to end with real processes: the rooms service, two gateways and the monitor.

Private rooms through the API, membership enforced by the gateways, members added or removed while
connected, and presence across both gateways, corrected after a gateway is SIGKILLed."""

from __future__ import annotations

import time

import orjson

from tests.gateway.helpers import client, events_of, recv_until, request
from tests.rooms.helpers import FAST_ENV, ROOMS, api, auth, poll

GATEWAY = "roomstream_gateway"
MONITOR = "roomstream_monitor"


def start_deployment(cluster, *, monitor: bool = False):
    rooms = cluster.start(ROOMS, env=FAST_ENV, name="rooms")
    gw_env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    gws = [
        cluster.start(
            GATEWAY,
            env={**gw_env, "ROOMSTREAM_NODE_ID": f"gw-{n}"},
            name=f"gw-{n}",
            ready_path="/healthz",
        )
        for n in ("a", "b")
    ]
    if monitor:
        cluster.start(
            MONITOR,
            env={"ROOMSTREAM_NODE_TIMEOUT_S": "3", "ROOMSTREAM_CHECK_INTERVAL_S": "0.2"},
            name="monitor",
        )
    return rooms, gws


async def quiet_until_pong(ws, room: str) -> list[dict]:
    """Frames of `room` this socket receives before the reply to a ping sent now (the gateway
    writes a socket's frames in order, so anything already dispatched to it arrives first)."""
    frames = await recv_until(ws, lambda f: f["type"] == "pong" and f.get("ref") == "quiet")
    return [f for f in frames if f.get("room") == room]


async def test_private_room_membership_through_the_api(cluster, namespace, redis_client):
    rooms, (gw_a, gw_b) = start_deployment(cluster)
    async with api(rooms.url) as http:
        r = await http.post(
            "/rooms",
            json={"id": "secret", "name": "Secret", "kind": "private", "members": ["bob"]},
            headers=auth("alice"),
        )
        assert r.status_code == 201, r.text

        alice, welcome = await client(gw_a.ws_url, "alice")
        assert welcome["rooms"] == {"secret": {"seq": 1}}
        bob, welcome_b = await client(gw_b.ws_url, "bob")
        assert welcome_b["rooms"] == {"secret": {"seq": 1}}
        mallory, welcome_m = await client(gw_b.ws_url, "mallory")
        assert welcome_m["rooms"] == {}

        # Members chat.
        ack = await request(alice, {"type": "send", "room": "secret", "text": "hi bob", "id": "m1"})
        assert ack["type"] == "ack" and ack["seq"] == 2
        got = await events_of(bob, "secret", 1)
        assert got[0]["data"]["text"] == "hi bob" and got[0]["seq"] == 2
        reply = await request(
            bob, {"type": "send", "room": "secret", "text": "hi alice", "id": "m2"}
        )
        assert reply["type"] == "ack"
        # The sender's own socket gets its message too; then bob's.
        assert [e["data"]["text"] for e in await events_of(alice, "secret", 2)] == [
            "hi bob",
            "hi alice",
        ]

        # A non-member is refused on join and on send, and receives nothing.
        join = await request(mallory, {"type": "join", "room": "secret"})
        assert join["type"] == "error" and join["code"] == "forbidden", join
        send = await request(mallory, {"type": "send", "room": "secret", "text": "x", "id": "x1"})
        assert send["type"] == "error" and send["code"] == "forbidden", send

        # The owner adds mallory while she is connected: she receives from now on, no reconnect.
        r = await http.put("/rooms/secret/members/mallory", headers=auth("alice"))
        assert r.status_code == 200
        joined_seq = r.json()["seq"]
        ack = await request(
            alice, {"type": "send", "room": "secret", "text": "welcome", "id": "m3"}
        )
        got = await events_of(mallory, "secret", 1)
        assert got[0]["seq"] == ack["seq"] and got[0]["data"]["text"] == "welcome"
        mine = await request(
            mallory, {"type": "send", "room": "secret", "text": "thanks", "id": "m4"}
        )
        assert mine["type"] == "ack", mine
        assert (await events_of(bob, "secret", 1, kind="member_joined"))[0]["seq"] == joined_seq

        # Removed: she stops receiving and may no longer send or join.
        r = await http.delete("/rooms/secret/members/mallory", headers=auth("alice"))
        assert r.status_code == 204
        await events_of(mallory, "secret", 1, kind="member_left")
        ack = await request(alice, {"type": "send", "room": "secret", "text": "bye", "id": "m5"})
        await events_of(bob, "secret", 1)  # both bob and mallory are on gateway b
        await mallory.send(orjson.dumps({"type": "ping", "ref": "quiet"}).decode())
        late = await quiet_until_pong(mallory, "secret")
        assert all(f.get("seq", 0) < ack["seq"] for f in late), late
        send = await request(mallory, {"type": "send", "room": "secret", "text": "x", "id": "m6"})
        assert send["type"] == "error" and send["code"] == "forbidden", send
        join = await request(mallory, {"type": "join", "room": "secret"})
        assert join["type"] == "error" and join["code"] == "forbidden", join

        # A public room joined through a gateway: the rooms projection picks the join up.
        r = await http.post(
            "/rooms", json={"id": "plaza", "name": "Plaza", "kind": "public"}, headers=auth("alice")
        )
        assert r.status_code == 201
        join = await request(mallory, {"type": "join", "room": "plaza"})
        assert join["type"] == "joined" and join["seq"] == 2, join

        async def mallory_in_plaza() -> bool:
            r = await http.get("/users/mallory/rooms", headers=auth("mallory"))
            return r.json() == {"rooms": ["plaza"]}

        await poll(mallory_in_plaza)
        r = await http.get("/rooms/plaza/members", headers=auth("mallory"))
        assert r.json() == {"members": ["alice", "mallory"]}
        for ws in (alice, bob, mallory):
            await ws.close()


async def test_presence_across_two_gateways_recovers_after_sigkill(
    cluster, namespace, redis_client
):
    rooms, (gw_a, gw_b) = start_deployment(cluster, monitor=True)
    async with api(rooms.url) as http:
        r = await http.post(
            "/rooms",
            json={"id": "hall", "name": "Hall", "kind": "public", "members": ["bob", "carol"]},
            headers=auth("alice"),
        )
        assert r.status_code == 201

        alice_a, _ = await client(gw_a.ws_url, "alice")
        _alice_b, _ = await client(gw_b.ws_url, "alice")
        bob_b, _ = await client(gw_b.ws_url, "bob")
        carol_a, _ = await client(gw_a.ws_url, "carol")

        async def http_presence() -> list[dict]:
            r = await http.get("/rooms/hall/presence", headers=auth("carol"))
            return r.json()["users"]

        everyone = [
            {"user": "alice", "connections": 2},
            {"user": "bob", "connections": 1},
            {"user": "carol", "connections": 1},
        ]
        await poll(lambda: _equals(http_presence(), everyone))
        # The `presence` command on either gateway reads the same hash: they agree.
        for ws in (carol_a, bob_b):
            reply = await request(ws, {"type": "presence", "room": "hall"})
            assert reply["type"] == "presence" and reply["users"] == everyone

        # Gateway b dies without a goodbye: its connections leave presence within 30 s.
        killed = time.monotonic()
        gw_b.kill()
        after = [{"user": "alice", "connections": 1}, {"user": "carol", "connections": 1}]
        # The bound (30 s) is the deadline; with the monitor's 3 s timeout it is generous.
        await poll(lambda: _equals(http_presence(), after), deadline_s=30)
        print(f"presence recovered {time.monotonic() - killed:.1f}s after the SIGKILL")
        reply = await request(carol_a, {"type": "presence", "room": "hall"})
        assert reply["users"] == after
        # The room is told that bob went offline.
        frames = await recv_until(
            carol_a, lambda f: f.get("kind") == "offline" and f.get("user") == "bob"
        )
        assert frames[-1]["room"] == "hall" and "seq" not in frames[-1]
        for ws in (alice_a, carol_a):
            await ws.close()


async def _equals(value, expected) -> bool:
    return (await value) == expected
