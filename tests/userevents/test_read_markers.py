"""Read markers with real processes: `read` on one socket reaches the user's other socket (on
another gateway) as a `user` frame, max wins, the marker is durable in Postgres, and a welcome
after reconnecting carries `unread` (messages by others after the marker, deleted ones not
counted); the command refuses seqs beyond the room and rooms the user is not a member of."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from roomstream_client import Client, UserEvent
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.userstream import read_markers_key

from tests.conftest import Cluster, make_token, service_token
from tests.gateway.helpers import client, request
from tests.userevents.test_user_events import nothing_more, user_frames

GATEWAY = "roomstream_gateway"
DEADLINE_S = 30.0


async def create_room(http: httpx.AsyncClient, room: str, kind: str, members: list[str]) -> None:
    r = await http.post(
        "/rooms",
        json={"id": room, "name": room, "kind": kind, "members": members, "owner": members[0]},
        headers={"Authorization": f"Bearer {service_token()}"},
    )
    assert r.status_code == 201, r.text


async def stored_marker(database_url: str, user: str, room: str, seq: int) -> None:
    """Wait until Postgres holds `seq` as the marker (the rooms consumer applies the event)."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            got = await conn.fetchval(
                "SELECT seq FROM read_markers WHERE user_id = $1 AND room = $2", user, room
            )
            if got == seq:
                return
            assert time.monotonic() < deadline, f"marker in Postgres is {got}, not {seq}"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def read(ws: Any, room: str, seq: int) -> dict[str, Any]:
    return await request(ws, {"type": "read", "room": room, "seq": seq})


async def test_read_reaches_the_other_socket_and_the_welcome_counts_unread(
    cluster: Cluster, database_url: str
) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    gw_a = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-a"}, name="gw-a")
    gw_b = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-b"}, name="gw-b")
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
        await create_room(http, "general", "public", ["alice", "bob"])
        await create_room(http, "secret", "private", ["bob"])
        await create_room(http, "town", "public", ["bob"])
    a1, w1 = await client(gw_a.ws_url, "alice")
    a2, _ = await client(gw_b.ws_url, "alice")
    bob, _ = await client(gw_b.ws_url, "bob")
    assert w1["rooms"]["general"] == {"seq": 1}, "no marker yet: no unread"
    seqs = []
    for i in range(5):  # seqs 2..6
        ack = await request(
            bob, {"type": "send", "room": "general", "text": f"m{i}", "id": f"b{i}"}
        )
        seqs.append(ack["seq"])
    assert seqs == [2, 3, 4, 5, 6]

    ack = await read(a1, "general", 3)
    assert ack["type"] == "ack" and ack["seq"] == 3 and ack["room"] == "general"
    for ws in (a1, a2):  # every socket of the user, on both gateways
        (marker,) = await user_frames(ws, 1)
        assert marker["kind"] == "read" and marker["data"] == {"room": "general", "seq": 3}
    # Backwards: max wins, nothing appended, the ack says the marker in force.
    back = await read(a2, "general", 2)
    assert back["type"] == "ack" and back["seq"] == 3
    same = await read(a2, "general", 3)
    assert same["seq"] == 3
    await nothing_more(a1)
    await nothing_more(bob)  # other users never see alice's markers
    # Refused: beyond the room's seq, a private room alice is not in, a public room she did not
    # join, a room that does not exist, a malformed seq.
    beyond = await read(a1, "general", 99)
    assert beyond["type"] == "error" and beyond["code"] == "bad_request", beyond
    for room, code in (("secret", "forbidden"), ("town", "forbidden"), ("nope", "not_found")):
        err = await read(a1, room, 1)
        assert err["type"] == "error" and err["code"] == code, (room, err)
    for bad in (-1, "3", 2**62, None):
        err = await request(a1, {"type": "read", "room": "general", "seq": bad})
        assert err["type"] == "error" and err["code"] == "bad_request", (bad, err)
    await stored_marker(database_url, "alice", "general", 3)

    # Bob deletes seq 5; alice's own message (seq 8) is not unread for her.
    deleted = await request(bob, {"type": "delete", "room": "general", "seq": 5})
    assert deleted["type"] == "ack" and deleted["seq"] == 7
    own = await request(a1, {"type": "send", "room": "general", "text": "mine", "id": "a-1"})
    assert own["seq"] == 8
    for ws in (a1, a2):
        await ws.close()
    again, welcome = await client(gw_b.ws_url, "alice")
    assert welcome["rooms"]["general"] == {"seq": 8, "unread": 2}, "4 and 6: by others, not deleted"
    assert (await read(again, "general", 8))["seq"] == 8
    (frame,) = await user_frames(again, 1)
    assert frame["data"] == {"room": "general", "seq": 8}
    await again.close()
    fresh, welcome = await client(gw_a.ws_url, "alice")
    assert welcome["rooms"]["general"] == {"seq": 8, "unread": 0}
    await stored_marker(database_url, "alice", "general", 8)
    for ws in (fresh, bob):
        await ws.close()


async def test_python_client_read_tells_the_other_client(cluster: Cluster) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    gw_a = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-a"}, name="gw-a")
    gw_b = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-b"}, name="gw-b")
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
        await create_room(http, "lobby", "public", ["dora"])
    got: list[UserEvent] = []
    arrived = asyncio.Event()

    def on_user_event(event: UserEvent) -> None:
        got.append(event)
        arrived.set()

    async with (
        Client(gw_a.ws_url, make_token("dora")) as phone,
        Client(gw_b.ws_url, make_token("dora"), on_user_event=on_user_event) as laptop,
    ):
        sent = await phone.send("lobby", "hello")
        assert (await phone.read("lobby", sent.seq or 0)).seq == sent.seq
        async with asyncio.timeout(DEADLINE_S):
            while not got:
                arrived.clear()
                await arrived.wait()
        assert got[0].kind == "read" and got[0].data == {"room": "lobby", "seq": sent.seq}
        assert laptop.last_user_seq == got[0].seq


async def test_racing_reads_end_at_the_highest_and_a_lost_cache_is_refilled_from_postgres(
    cluster: Cluster, database_url: str, namespace: str, redis_client: aioredis.Redis
) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    gw = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-a"}, name="gw-a")
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
        await create_room(http, "general", "public", ["erin", "finn"])
    erin1, _ = await client(gw.ws_url, "erin")
    erin2, _ = await client(gw.ws_url, "erin")
    erin3, _ = await client(gw.ws_url, "erin")
    finn, _ = await client(gw.ws_url, "finn")
    for i in range(8):  # seqs 2..9
        await request(finn, {"type": "send", "room": "general", "text": f"m{i}", "id": f"f{i}"})
    # Two sockets race: every interleaving ends at the highest marker, everywhere.
    asked = ((erin1, 5), (erin2, 7), (erin3, 6))
    acks = await asyncio.gather(*(read(ws, "general", seq) for ws, seq in asked))
    for (_, seq), ack in zip(asked, acks, strict=True):
        assert ack["type"] == "ack" and seq <= ack["seq"] <= 7, (seq, ack)
    assert acks[1]["seq"] == 7
    assert (await read(erin3, "general", 2))["seq"] == 7, "max wins after the race too"
    await stored_marker(database_url, "erin", "general", 7)
    markers = read_markers_key(StreamKeys(namespace=namespace), "erin")
    assert await redis_client.hget(markers, "general") == b"7"
    # The cache is lost; the rooms service refills it from Postgres when it starts.
    await redis_client.delete(markers)
    _, blind = await client(gw.ws_url, "erin")
    assert blind["rooms"]["general"] == {"seq": 9}, "no marker in the cache: no unread"
    rooms.stop()
    cluster.start("roomstream_rooms", port=rooms.port, name="rooms-again")
    assert await redis_client.hget(markers, "general") == b"7"
    _, welcome = await client(gw.ws_url, "erin")
    assert welcome["rooms"]["general"] == {"seq": 9, "unread": 2}
    for ws in (erin1, erin2, erin3, finn):
        await ws.close()
