"""Per-user events and read markers under attack, with real processes: odd `user_since` values
(on every way of authenticating), commands naming a user stream or an impossible room id, odd
`read` seqs, odd publish calls (ids, depth, a reserved kind, ten concurrent retries), and the
gateway's pub/sub connection killed while user events flow (each arrives once, in order)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.userstream import user_stream
from websockets.asyncio.client import connect

from tests.conftest import Cluster, make_token, service_token
from tests.gateway.helpers import client, open_ws, recv, request
from tests.support.redis_server import OwnRedis, require_redis_server
from tests.userevents.test_read_markers import create_room
from tests.userevents.test_user_events import nothing_more, publish, user_frames

GATEWAY = "roomstream_gateway"
DEADLINE_S = 30.0


async def test_odd_user_since_values_are_ignored_and_odd_publishes_refused(
    cluster: Cluster,
) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_ROOMS_URL": rooms.url})
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
        await publish_edges(http)
        for i in (1, 2):
            assert (await publish(http, "dora", "notice", {"n": i})).status_code == 201
    odd = [
        "-1",
        "9223372036854775808",  # 2^63
        "1e3",
        "%C2%B2",  # '²': str.isdigit() holds, int() refuses it
        "%D9%A1",  # Arabic-Indic one: not an ASCII seq
        "",
        "1%00",
    ]
    for via in ("header", "query", "frame"):
        for value in odd:
            if via == "query":  # the token in the query too, after user_since
                url = f"{gw.ws_url}?user_since={value}&access_token={make_token('dora')}"
                ws = await connect(url)
            else:
                ws = await open_ws(f"{gw.ws_url}?user_since={value}", "dora", via=via)
            welcome = await recv(ws, DEADLINE_S)
            assert welcome["type"] == "welcome", (via, value, welcome)
            assert welcome["user_stream"] == {"seq": 2}, (via, value, welcome)
            await nothing_more(ws, 0.05)
            await ws.close()
    # Repeated: the first value counts.
    ws, welcome = await client(f"{gw.ws_url}?user_since=1&user_since=x", "dora")
    assert welcome["user_stream"] == {"seq": 2, "recovered": True, "missed": 1}
    assert [f["seq"] for f in await user_frames(ws, 1)] == [2]
    await ws.close()
    ws = await open_ws(f"{gw.ws_url}?user_since=0", "dora", via="frame")
    welcome = await recv(ws, DEADLINE_S)
    assert welcome["user_stream"] == {"seq": 2, "recovered": True, "missed": 2}
    assert [f["seq"] for f in await user_frames(ws, 2)] == [1, 2]
    await ws.close()


async def test_commands_never_name_a_user_stream_and_read_edges(cluster: Cluster) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_ROOMS_URL": rooms.url})
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
        await create_room(http, "general", "public", ["alice", "bob"])
        alice, _ = await client(gw.ws_url, "alice")
        bad = ["~bob", "~alice", "a~b", "a:b", "gen\u0000", "x" * 10_000, "General", ""]
        for room in bad:
            for cmd in (
                {"type": "join", "room": room},
                {"type": "leave", "room": room},
                {"type": "history", "room": room},
                {"type": "presence", "room": room},
                {"type": "send", "room": room, "text": "hi", "id": f"m-{len(room)}"},
                {"type": "read", "room": room, "seq": 0},
                {"type": "typing", "room": room},
            ):
                answer = await request(alice, dict(cmd))
                assert answer["type"] == "error", (cmd["type"], room[:20], answer)
                assert answer["code"] in {"bad_request", "forbidden"}, (cmd["type"], answer)
        # Bob's stream stays his: an event to bob never reaches alice.
        assert (await publish(http, "bob", "secret", {"s": 1})).status_code == 201
        await nothing_more(alice, 0.5)
        await alice.close()
        await read_edges(gw.ws_url, http)


async def read_edges(ws_url: str, http: httpx.AsyncClient) -> None:
    """`read` seqs at the edges, and a read of a room left just before (refused)."""
    await create_room(http, "lounge", "public", ["erin", "fred"])
    erin, _ = await client(ws_url, "erin")
    fred, _ = await client(ws_url, "fred")
    for i in range(3):
        sent = await request(
            fred, {"type": "send", "room": "lounge", "text": f"m{i}", "id": f"f{i}"}
        )
        assert sent["type"] == "ack", sent
    top = sent["seq"]
    zero = await request(erin, {"type": "read", "room": "lounge", "seq": 0})
    assert zero["type"] == "ack" and zero["seq"] == 0, zero
    for odd in (top + 1, 1.0, "1", -1, True, None, 2**62):
        answer = await request(erin, {"type": "read", "room": "lounge", "seq": odd})
        assert answer["type"] == "error" and answer["code"] == "bad_request", (odd, answer)
    full = await request(erin, {"type": "read", "room": "lounge", "seq": top})
    assert full["type"] == "ack" and full["seq"] == top, full
    (told,) = await user_frames(erin, 1)
    assert told["kind"] == "read" and told["data"] == {"room": "lounge", "seq": top}
    # Fred leaves, then reads: refused, nothing appended to his stream.
    left = await request(fred, {"type": "leave", "room": "lounge"})
    assert left["type"] == "ack", left
    late = await request(fred, {"type": "read", "room": "lounge", "seq": 1})
    assert late["type"] == "error" and late["code"] == "forbidden", late
    await nothing_more(fred, 0.3)
    await erin.close()
    await fred.close()
    again, welcome = await client(ws_url, "fred")
    assert welcome["user_stream"] == {"seq": 0}, "no read event was appended for fred"
    await again.close()


async def publish_edges(http: httpx.AsyncClient) -> None:
    """Publish calls at the edges: user token, odd user ids, 10k-deep data, a reserved kind,
    ten concurrent retries of one id."""
    r = await publish(http, "gina", "notice", {}, token=make_token("gina"))
    assert r.status_code == 403, r.text
    r = await publish(http, "x" * 129, "notice", {})
    assert r.status_code == 400, r.text
    for user in ("a:b", "~gina"):
        r = await publish(http, user, "notice", {"u": user})
        assert r.status_code == 201 and r.json()["seq"] == 1, (user, r.text)
    headers = {"Authorization": f"Bearer {service_token()}", "Content-Type": "application/json"}
    body = '{"kind":"notice","data":' + '{"d":' * 10_000 + "{}" + "}" * 10_000 + "}"
    r = await http.post("/users/gina/events", content=body, headers=headers)
    assert r.status_code == 400, r.text
    r = await publish(http, "gina", "read", {"room": "general", "seq": 1})
    assert r.status_code == 400, r.text
    answers = await asyncio.gather(
        *(publish(http, "gina", "notice", {"i": i}, id="same") for i in range(10))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 9 + [201], [a.text for a in answers]
    assert len({a.json()["seq"] for a in answers}) == 1
    r = await publish(http, "gina", "notice", {})
    assert r.json()["seq"] == 2, "the ten retries appended one event"


async def test_user_events_survive_a_killed_pubsub_connection(
    cluster: Cluster, tmp_path: Path
) -> None:
    require_redis_server()
    own = OwnRedis(tmp_path)  # CLIENT KILL TYPE pubsub must not hit the shared server
    own.start()
    redis = aioredis.from_url(own.url)
    try:
        env = {"REDIS_URL": own.url}
        rooms = cluster.start("roomstream_rooms", name="rooms", env=env)
        gw = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_ROOMS_URL": rooms.url})
        ws, welcome = await client(gw.ws_url, "hana")
        assert welcome["user_stream"] == {"seq": 0}
        total = 60
        async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:

            async def kill_soon() -> int:
                await asyncio.sleep(0.005)
                return int(await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))

            kills = 0
            for batch in range(6):  # ten concurrent publishes, the connection killed among them
                *answers, killed = await asyncio.gather(
                    *(publish(http, "hana", "notice", {"b": batch, "i": i}) for i in range(10)),
                    kill_soon(),
                )
                assert all(a.status_code == 201 for a in answers)
                kills += killed
                await asyncio.sleep(0.05)
            assert kills >= 3, "the gateway's pub/sub connection was killed again and again"
        got = await user_frames(ws, total)
        assert [f["seq"] for f in got] == list(range(1, total + 1)), "each once, in order"
        await nothing_more(ws, 0.5)
        await ws.close()
    finally:
        await redis.aclose()
        cluster.stop_all()
        own.stop()


async def shard_subscribers(redis: aioredis.Redis, channel: str, want: int) -> None:
    """Wait until `channel` has `want` shard subscribers (the gateways that route it)."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            reply = await redis.execute_command("PUBSUB", "SHARDNUMSUB", channel)
            if int(reply[1]) == want:
                return
            await asyncio.sleep(0.05)


async def test_the_user_stream_routes_to_the_users_gateways_only_and_hops_lose_nothing(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    rooms = cluster.start("roomstream_rooms", name="rooms")
    env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    urls = [
        cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": f"gw-{n}"}, name=f"gw-{n}").ws_url
        for n in ("a", "b")
    ]
    channel = StreamKeys(namespace=namespace).channel(user_stream("ivy"))
    other, _ = await client(urls[1], "jack")  # gateway b holds a socket, but not ivy's
    ws, _ = await client(urls[0], "ivy")
    await shard_subscribers(redis_client, channel, 1)
    second, _ = await client(urls[1], "ivy")  # now both gateways hold a socket of ivy
    await shard_subscribers(redis_client, channel, 2)
    await second.close()
    await shard_subscribers(redis_client, channel, 1)
    total = 40
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:

        async def flow() -> None:
            for i in range(1, total + 1):
                assert (await publish(http, "ivy", "notice", {"n": i})).status_code == 201
                await asyncio.sleep(0.01)

        publisher = asyncio.create_task(flow())
        seen: list[int] = []
        hop = 0
        while len(seen) < total:
            frame = await recv(ws, DEADLINE_S)
            if frame["type"] == "user":
                seen.append(frame["seq"])
            if len(seen) in (8, 16, 24, 32) and len(seen) > hop:
                # The only socket leaves; events go on meanwhile; it resumes on the other gateway.
                hop = len(seen)
                await ws.close()
                ws, welcome = await client(f"{urls[hop // 8 % 2]}?user_since={seen[-1]}", "ivy")
                assert welcome["user_stream"]["recovered"] is True, welcome
        await publisher
    assert seen == list(range(1, total + 1)), "each once, in order, across four hops"
    await nothing_more(ws, 0.5)
    await nothing_more(other, 0.1)
    await ws.close()
    await shard_subscribers(redis_client, channel, 0)  # no socket of ivy: no gateway routes it
    await other.close()


async def test_a_user_stream_gap_past_the_recent_buffer_does_not_stall_the_gateway(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The gateway's pub/sub connection drops while the user's events run past the recent
    buffer: history never serves a user stream (`~USER` is no room id), so the router must skip
    to what still exists (as a welcome says `recovered: false`), not retry forever with every
    later live event of the user held back."""
    require_redis_server()
    own = OwnRedis(tmp_path)
    own.start()
    redis = aioredis.from_url(own.url)
    try:
        env = {"REDIS_URL": own.url}
        rooms = cluster.start("roomstream_rooms", name="rooms", env=env)
        history = cluster.start("roomstream_history", name="history", env=env)
        gw = cluster.start(
            GATEWAY,
            env={**env, "ROOMSTREAM_ROOMS_URL": rooms.url, "ROOMSTREAM_HISTORY_URL": history.url},
        )
        ws, _ = await client(gw.ws_url, "kim")
        async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
            assert (await publish(http, "kim", "notice", {"n": 1})).status_code == 201
            assert [f["seq"] for f in await user_frames(ws, 1)] == [1]
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGSTOP)  # it cannot resubscribe before the trim
            try:
                killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                assert killed >= 1
                for i in range(2, 7):
                    assert (await publish(http, "kim", "notice", {"n": i})).status_code == 201
                recent = StreamKeys(namespace=namespace).recent(user_stream("kim"))
                await redis.xtrim(recent, minid="5-0", approximate=False)  # 2..4 gone
            finally:
                gw.proc.send_signal(signal.SIGCONT)
            assert (await publish(http, "kim", "notice", {"n": 7})).status_code == 201
            async with asyncio.timeout(15):
                got = [f["seq"] for f in await user_frames(ws, 3)]
            assert got == [5, 6, 7], "what still exists, then live, each once"
            # Nor do the HTTP APIs name a user stream: not even the user's own.
            own_token = {"Authorization": f"Bearer {make_token('kim')}"}
            for url in (f"{history.url}/rooms/~kim/messages", f"{rooms.url}/rooms/~kim/members"):
                r = await http.get(url, headers=own_token)
                assert r.status_code == 400, (url, r.text)
            r = await http.post(
                "/rooms/~kim/messages", json={"text": "x", "id": "k1"}, headers=own_token
            )
            assert r.status_code == 400, r.text
        await ws.close()
    finally:
        await redis.aclose()
        cluster.stop_all()
        own.stop()
