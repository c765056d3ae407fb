"""Per-user events with real processes: the rooms API publishes, two gateways deliver to every
socket of the user (and to nobody else), a socket that was offline gets what it missed once after
reconnecting with `user_since`, the Python client resumes its user stream across a gateway
SIGKILL, and the API refuses what the log must not take."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import redis.asyncio as aioredis
from roomstream_client import Client, UserEvent
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.userstream import user_stream
from websockets.asyncio.client import ClientConnection

from tests.conftest import Cluster, make_token, service_token
from tests.gateway.helpers import client, recv

GATEWAY = "roomstream_gateway"
DEADLINE_S = 30.0


def start(cluster: Cluster) -> tuple[str, str, str]:
    """Rooms service and two gateways: (rooms URL, gateway A ws URL, gateway B ws URL)."""
    rooms = cluster.start("roomstream_rooms", name="rooms")
    env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    gw_a = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-a"}, name="gw-a")
    gw_b = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-b"}, name="gw-b")
    return rooms.url, gw_a.ws_url, gw_b.ws_url


async def publish(
    http: httpx.AsyncClient, user: str, kind: str, data: Any, id: str | None = None, **kw: Any
) -> httpx.Response:
    body: dict[str, Any] = {"kind": kind, "data": data}
    if id is not None:
        body["id"] = id
    headers = {"Authorization": f"Bearer {kw.pop('token', service_token())}"}
    return await http.post(f"/users/{user}/events", json=body, headers=headers)


async def user_frames(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next `count` `user` frames of a socket (other frames are skipped)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await recv(ws, DEADLINE_S)
        if frame["type"] == "user":
            got.append(frame)
    return got


async def nothing_more(ws: ClientConnection, within_s: float = 0.5) -> None:
    """No further `user` frame arrives within `within_s` (the duplicate check)."""
    with contextlib.suppress(TimeoutError):
        while True:
            frame = await recv(ws, within_s)
            assert frame["type"] != "user", f"unexpected user frame {frame}"


async def test_user_event_reaches_every_socket_once_and_a_reconnect_gets_what_it_missed(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    rooms_url, url_a, url_b = start(cluster)
    async with httpx.AsyncClient(base_url=rooms_url, timeout=10) as http:
        a1, w1 = await client(url_a, "alice")
        a2, _ = await client(url_a, "alice")
        b1, _ = await client(url_b, "alice")
        bob, _ = await client(url_b, "bob")
        assert w1["user_stream"] == {"seq": 0}
        r = await publish(http, "alice", "invitation", {"room": "ops", "from": "bob"}, id="inv-1")
        assert r.status_code == 201, r.text
        answer = r.json()
        assert answer["user"] == "alice" and answer["seq"] == 1
        for ws in (a1, a2, b1):
            (got,) = await user_frames(ws, 1)
            assert got["seq"] == 1 and got["kind"] == "invitation"
            assert got["data"] == {"room": "ops", "from": "bob"}
            assert got["id"] == answer["id"] and got["by"] == "test-service"
        # A retried publish (same id) answers the same and appends nothing.
        again = await publish(http, "alice", "invitation", {"other": "body"}, id="inv-1")
        assert again.status_code == 200 and again.json() == answer
        for ws in (a1, a2, b1):
            await nothing_more(ws)
        await nothing_more(bob)  # another user's socket gets nothing of alice's stream

        # b1 goes offline; two events while it is away, then it reconnects (to the other
        # gateway) naming the last seq it saw.
        await b1.close()
        for i in (2, 3):
            r = await publish(http, "alice", "notice", {"n": i})
            assert r.status_code == 201 and r.json()["seq"] == i
        back, welcome = await client(f"{url_a}?user_since=1", "alice")
        assert welcome["user_stream"] == {"seq": 3, "recovered": True, "missed": 2}
        missed = await user_frames(back, 2)
        assert [f["seq"] for f in missed] == [2, 3]
        assert [f["data"] for f in missed] == [{"n": 2}, {"n": 3}]
        r = await publish(http, "alice", "notice", {"n": 4})
        (live,) = await user_frames(back, 1)
        assert live["seq"] == 4, "live after the missed ones, none twice"
        await nothing_more(back)
        for ws in (a1, a2):
            assert [f["seq"] for f in await user_frames(ws, 3)] == [2, 3, 4]
        # Resuming from a seq the buffer no longer holds says so (a buffer trimmed to seq 3..4).
        recent = StreamKeys(namespace=namespace).recent(user_stream("alice"))
        await redis_client.xtrim(recent, minid="3-0", approximate=False)
        old, old_welcome = await client(f"{url_b}?user_since=0", "alice")
        assert old_welcome["user_stream"] == {
            "seq": 4,
            "recovered": False,
            "missed": 2,
            "first_available": 3,
        }
        assert [f["seq"] for f in await user_frames(old, 2)] == [3, 4]
        # Garbage in user_since is ignored: the socket starts at the current position.
        odd, odd_welcome = await client(f"{url_b}?user_since=x1", "alice")
        assert odd_welcome["user_stream"] == {"seq": 4}
        for ws in (a1, a2, back, bob, odd, old):
            await ws.close()


async def test_publish_refuses_what_the_log_must_not_take(cluster: Cluster) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
        r = await publish(http, "a%00b", "notice", {})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
        r = await publish(http, "alice", "notice", {"text": "x" * 10_000})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
        r = await publish(http, "alice", "notice", {"t": "a\u0000b"})
        assert r.status_code == 400, r.text
        for kind in ("read", "Bad Kind", "", 7):
            r = await publish(http, "alice", kind, {})  # type: ignore[arg-type]
            assert r.status_code == 400, (kind, r.text)
        r = await publish(http, "alice", "notice", [1, 2])
        assert r.status_code == 400, r.text
        r = await publish(http, "alice", "notice", {}, token=make_token("alice"))
        assert r.status_code == 403, r.text
        r = await publish(http, "alice", "notice", {"ok": True})
        assert r.status_code == 201 and r.json()["seq"] == 1, "nothing refused was appended"


async def test_python_client_resumes_the_user_stream_across_a_gateway_sigkill(
    cluster: Cluster,
) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    gw_a = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-a"}, name="gw-a")
    gw_b = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-b"}, name="gw-b")
    got: list[UserEvent] = []
    arrived = asyncio.Event()

    def on_user_event(event: UserEvent) -> None:
        got.append(event)
        arrived.set()

    async def until(count: int) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while len(got) < count:
                arrived.clear()
                await arrived.wait()

    async with (
        httpx.AsyncClient(base_url=rooms.url, timeout=10) as http,
        Client([gw_a.ws_url, gw_b.ws_url], make_token("carol"), on_user_event=on_user_event) as c,
    ):
        assert c.last_user_seq == 0
        for i in range(1, 4):
            assert (await publish(http, "carol", "notice", {"n": i})).status_code == 201
        await until(3)
        gw_a.kill()  # the client's gateway dies; events published meanwhile wait in the stream
        for i in range(4, 8):
            assert (await publish(http, "carol", "notice", {"n": i})).status_code == 201
        await until(7)
        assert c.stats.reconnects >= 1 and c.url == gw_b.ws_url
        assert c.welcome is not None and c.welcome.user_stream is not None
        assert c.welcome.user_stream.recovered is True
        await asyncio.sleep(0.3)
        assert [e.seq for e in got] == list(range(1, 8)), "each once, in order"
        assert [e.data["n"] for e in got] == list(range(1, 8))
        assert c.last_user_seq == 7
