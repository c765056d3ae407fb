"""Cross-gateway delivery: every member on both gateways gets every message once, in seq order;
acks carry the seq; a retried send is idempotent."""

from __future__ import annotations

import asyncio

import orjson

from tests.gateway.helpers import (
    client,
    create_room,
    events_of,
    keys,
    log_events,
    recv,
    request,
)

GATEWAY = "roomstream_gateway"


async def test_message_reaches_every_member_on_both_gateways_once_in_order(
    cluster, namespace, redis_client
):
    await create_room(redis_client, namespace, "lobby", "alice", members=["bob", "carol"])
    a = cluster.start(GATEWAY)
    b = cluster.start(GATEWAY)

    alice, welcome = await client(a.ws_url, "alice")
    assert welcome["user"] == "alice"
    assert welcome["rooms"] == {"lobby": {"seq": 1}}
    bob_a, _ = await client(a.ws_url, "bob")
    bob_b, _ = await client(b.ws_url, "bob")
    carol_b, welcome_c = await client(b.ws_url, "carol")
    assert welcome_c["node"] != welcome["node"]
    stranger, welcome_s = await client(b.ws_url, "stranger")
    assert welcome_s["rooms"] == {}

    n = 30
    acks = []
    for i in range(n):
        acks.append(
            await request(alice, {"type": "send", "room": "lobby", "text": f"m{i}", "id": f"c{i}"})
        )
    assert [ack["type"] for ack in acks] == ["ack"] * n
    assert [ack["seq"] for ack in acks] == list(range(2, n + 2))
    assert all(ack["room"] == "lobby" and ack["id"] for ack in acks)

    for ws in (bob_a, bob_b, carol_b):
        got = await events_of(ws, "lobby", n)
        assert [e["seq"] for e in got] == list(range(2, n + 2))
        assert [e["data"]["text"] for e in got] == [f"m{i}" for i in range(n)]
        assert all(e["user"] == "alice" for e in got)
        assert [e["id"] for e in got] == [ack["id"] for ack in acks]
    # The sender's own socket receives the room's events too.
    mine = await events_of(alice, "lobby", n)
    assert [e["seq"] for e in mine] == list(range(2, n + 2))

    # A retried send (same client id) gets the same ack and appends nothing.
    again = await request(alice, {"type": "send", "room": "lobby", "text": "m0", "id": "c0"})
    assert (again["type"], again["seq"], again["id"]) == ("ack", acks[0]["seq"], acks[0]["id"])
    k = keys(namespace)
    assert int(await redis_client.hget(k.seq(k.room_shard("lobby")), "lobby")) == n + 1
    # A marker sent afterwards is the next event: no duplicate was delivered in between.
    marker = await request(alice, {"type": "send", "room": "lobby", "text": "end", "id": "end"})
    assert marker["seq"] == n + 2
    for ws in (bob_a, carol_b):
        (nxt,) = await events_of(ws, "lobby", 1)
        assert nxt["seq"] == n + 2 and nxt["data"]["text"] == "end"

    # Non-members receive nothing of the room.
    pong = await request(stranger, {"type": "ping"})
    assert pong["type"] == "pong"
    try:
        extra = await asyncio.wait_for(stranger.recv(), 0.5)
    except TimeoutError:
        extra = None
    assert extra is None or orjson.loads(extra).get("room") != "lobby"

    # Messages carry the trace context, connections were logged.
    events = await log_events(redis_client, namespace)
    messages = [e for e in events if e["kind"] == "message"]
    assert len(messages) == n + 1
    assert all("traceparent" in e["trace"] for e in messages)
    connected = [e for e in events if e["kind"] == "connected"]
    assert {e["user"] for e in connected} == {"alice", "bob", "carol", "stranger"}
    assert all(e["node"] and e["conn"] for e in connected)

    for ws in (alice, bob_a, bob_b, carol_b, stranger):
        await ws.close()


async def test_room_commands_join_leave_edit_delete_typing_presence(
    cluster, namespace, redis_client
):
    await create_room(redis_client, namespace, "open", "owner")
    await create_room(redis_client, namespace, "club", "owner", kind="private", members=["dave"])
    gw = cluster.start(GATEWAY)
    owner, _ = await client(gw.ws_url, "owner")
    dave, welcome = await client(gw.ws_url, "dave")
    assert set(welcome["rooms"]) == {"club"}

    # Joining a public room appends member_joined, which the room's members receive.
    joined = await request(dave, {"type": "join", "room": "open"})
    assert joined["type"] == "joined" and joined["room"] == "open"
    assert joined["seq"] == 2 and joined["recovered"] is True
    (ev,) = await events_of(owner, "open", 1, kind="member_joined")
    assert (ev["seq"], ev["user"], ev["data"]["by"]) == (2, "dave", "dave")

    sent = await request(dave, {"type": "send", "room": "open", "text": "hello", "id": "x1"})
    assert sent["seq"] == 3
    # Edit and delete: own messages only.
    theirs = await request(owner, {"type": "edit", "room": "open", "seq": 3, "text": "hacked"})
    assert (theirs["type"], theirs["code"]) == ("error", "forbidden")
    not_msg = await request(dave, {"type": "delete", "room": "open", "seq": 2})
    assert (not_msg["type"], not_msg["code"]) == ("error", "forbidden")
    edited = await request(dave, {"type": "edit", "room": "open", "seq": 3, "text": "hello!"})
    assert edited["type"] == "ack" and edited["seq"] == 4
    deleted = await request(dave, {"type": "delete", "room": "open", "seq": 3})
    assert deleted["type"] == "ack" and deleted["seq"] == 5
    got = await events_of(owner, "open", 3, kind=None)
    assert [(e["seq"], e["kind"]) for e in got] == [
        (3, "message"),
        (4, "message_edited"),
        (5, "message_deleted"),
    ]
    assert got[1]["data"] == {"target_seq": 3, "text": "hello!"}

    # Typing is live (no seq) and rate-limited per connection: the second one is dropped.
    await dave.send(orjson.dumps({"type": "typing", "room": "open"}).decode())
    await dave.send(orjson.dumps({"type": "typing", "room": "open"}).decode())
    frame = await request(owner, {"type": "ping"})  # ordering barrier on the owner's socket
    assert frame["type"] == "pong"
    while True:
        typing = await recv(owner)  # the typing frame may have come before the pong
        if typing["type"] == "typing":
            break
    assert typing == {"type": "typing", "room": "open", "user": "dave"}
    await request(dave, {"type": "send", "room": "open", "text": "after", "id": "x2"})
    (after,) = await events_of(owner, "open", 1)
    assert after["data"]["text"] == "after"
    typing_events = [e for e in await log_events(redis_client, namespace) if e["kind"] == "typing"]
    assert len(typing_events) == 1

    # Presence comes from the rooms read model, sorted by user.
    k = keys(namespace)
    await redis_client.hset(k.presence("open"), mapping={"owner": 1, "dave": 2})
    presence = await request(dave, {"type": "presence", "room": "open"})
    assert presence["users"] == [
        {"user": "dave", "connections": 2},
        {"user": "owner", "connections": 1},
    ]

    # Leave appends member_left and stops delivery of the room to that socket.
    left = await request(dave, {"type": "leave", "room": "open"})
    assert left["type"] == "ack" and left["seq"] == 7
    (ev,) = await events_of(owner, "open", 1, kind="member_left")
    assert ev["user"] == "dave"
    await request(owner, {"type": "send", "room": "open", "text": "bye", "id": "o1"})
    await request(owner, {"type": "send", "room": "club", "text": "club", "id": "o2"})
    # dave still gets the private room but no longer the public one.
    (club,) = await events_of(dave, "club", 1)
    assert club["data"]["text"] == "club"
    refused = await request(dave, {"type": "send", "room": "open", "text": "x", "id": "x3"})
    assert refused["code"] == "forbidden"
    for ws in (owner, dave):
        await ws.close()
