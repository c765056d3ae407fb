"""Members who connect while `POST /rooms` creates their room (issue 9 item 2, a variant the merged
fix does not cover; found by the adversarial review).

A socket subscribes to the rooms of the `user-rooms` read model at `welcome`, and to rooms created
later from the `room_created` its hub sees. A socket whose hub registration falls after the
gateway's tail delivered `room_created` but whose `user-rooms` read comes before the rooms
projection applied it gets neither: its welcome does not list the room and it never receives it
(until it reconnects or sends `join`). On a busy machine this hit about half of the members that
connected during the POST.

The fix: the delivery core remembers the grants its tail delivered (`Core.recent_rooms`), and the
welcome adds them to the read model's rooms (each still checked against the roster).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.gateway.helpers import client, request
from tests.rooms.helpers import FAST_ENV, ROOMS, api, auth

GATEWAY = "roomstream_gateway"
ROUNDS = 3
MEMBERS = 16


async def _drain(ws: Any, within_s: float) -> list[dict[str, Any]]:
    """Every frame that arrives until the socket has been quiet for `within_s`."""
    out: list[dict[str, Any]] = []
    try:
        while True:
            out.append(orjson.loads(await asyncio.wait_for(ws.recv(), within_s)))
    except TimeoutError:
        return out


async def test_members_connecting_during_post_rooms_receive_the_room(cluster, namespace):
    rooms = cluster.start(ROOMS, env=FAST_ENV, name="rooms")
    gws = [
        cluster.start(
            GATEWAY,
            env={
                "ROOMSTREAM_ROOMS_URL": rooms.url,
                "ROOMSTREAM_NODE_ID": f"gw-{n}",
                "ROOMSTREAM_SEND_RATE_PER_S": "1000",
            },
            name=f"gw-{n}",
            ready_path="/healthz",
        )
        for n in "ab"
    ]
    owner, _ = await client(gws[0].ws_url, "olga")
    misses: list[tuple[str, str, bool]] = []
    async with api(rooms.url) as http:
        for i in range(ROUNDS):
            room = f"fresh-{i}"
            users = [f"m{i}-{k}" for k in range(MEMBERS)]

            async def connect_during(k: int, user: str) -> tuple[Any, dict[str, Any]]:
                await asyncio.sleep(0.005 * k)  # spread over the POST's append → projection
                return await client(gws[k % 2].ws_url, user)

            body = {"id": room, "name": room, "kind": "private", "members": users}
            post = asyncio.create_task(http.post("/rooms", json=body, headers=auth("olga")))
            sockets = await asyncio.gather(*(connect_during(k, u) for k, u in enumerate(users)))
            r = await post
            assert r.status_code == 201, r.text
            await _drain(owner, 0.2)
            ack = await request(owner, {"type": "send", "room": room, "text": "hi", "id": room})
            assert ack["type"] == "ack", ack
            for (ws, welcome), user in zip(sockets, users, strict=True):
                frames = await _drain(ws, 1.5)
                if not any(
                    f.get("type") == "event"
                    and f.get("room") == room
                    and f.get("seq") == ack["seq"]
                    for f in frames
                ):
                    misses.append((room, user, room in welcome["rooms"]))
                await ws.close()
            await _drain(owner, 0.2)
    # Every member, however its connect interleaved with the creation, receives the room.
    assert misses == [], f"{len(misses)} of {ROUNDS * MEMBERS} members never got it: {misses}"
