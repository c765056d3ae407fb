"""End to end through gateways: a client that was away longer than Redis remembers gets every
missed event from history, exactly once and in order, then live ones; the `history` command."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from roomstream_kit.eventlog import EventLog

from tests.conftest import Cluster, service_token
from tests.history.helpers import create_room, get_messages, wait_for
from tests.history.wsclient import WsClient

RECENT = "20"
NO_RATE_LIMIT = {"ROOMSTREAM_SEND_RATE_PER_S": "100000", "ROOMSTREAM_SEND_BURST": "100000"}


async def test_reconnect_after_trim_replays_from_history_then_live(
    cluster: Cluster, eventlog: EventLog, redis_client: aioredis.Redis
) -> None:
    env = {"ROOMSTREAM_RECENT_PER_ROOM": RECENT}
    hist = cluster.start("roomstream_history", name="history", env=env)
    env_gw = {**env, **NO_RATE_LIMIT, "ROOMSTREAM_HISTORY_URL": hist.url}
    gw1 = cluster.start("roomstream_gateway", name="gw1", env=env_gw)
    gw2 = cluster.start("roomstream_gateway", name="gw2", env=env_gw)
    await create_room(eventlog, "lobby", "alice", members=["bob"])

    alice = await WsClient.connect(gw1.ws_url, "alice")
    joined = await alice.call("join", room="lobby")
    assert joined["type"] == "joined"
    bob = await WsClient.connect(gw2.ws_url, "bob")
    await bob.call("join", room="lobby")
    first = await bob.call("send", room="lobby", text="before", id="b0")
    seen = (await alice.next_event())["seq"]
    assert seen == first["seq"]
    await alice.close()

    # 300 messages while alice is away: far more than the recent buffer keeps.
    acks = await asyncio.gather(
        *(bob.call("send", room="lobby", text=f"away {i}", id=f"b{i + 1}") for i in range(300))
    )
    sent = sorted(a["seq"] for a in acks)
    assert sent == list(range(seen + 1, seen + 301))
    oldest = await redis_client.xrange(eventlog.keys.recent("lobby"), "-", "+", count=1)
    assert int(oldest[0][0].split(b"-")[0]) > seen + 1  # the start is gone from Redis

    # Reconnect elsewhere with `since`: every missed event once, in order, then live ones.
    alice = await WsClient.connect(gw2.ws_url, "alice")
    joined = await alice.call("join", room="lobby", since=seen)
    assert joined["type"] == "joined" and joined["recovered"] is True, joined
    live = asyncio.create_task(bob.call("send", room="lobby", text="live", id="b-live"))
    got = [(await alice.next_event())["seq"] for _ in range(301)]
    assert got == [*sent, (await live)["seq"]]
    await asyncio.sleep(0.5)
    assert alice.events.empty()  # nothing twice
    await alice.close()
    await bob.close()


async def test_history_command_pages_and_private_rooms(
    cluster: Cluster, eventlog: EventLog
) -> None:
    hist = cluster.start("roomstream_history", name="history")
    gw = cluster.start("roomstream_gateway", name="gw", env={"ROOMSTREAM_HISTORY_URL": hist.url})
    await create_room(eventlog, "secret", "alice", kind="private", members=["bob"])
    await create_room(eventlog, "open", "alice")
    bob = await WsClient.connect(gw.ws_url, "bob")
    await bob.call("join", room="secret")
    acks = [await bob.call("send", room="secret", text=f"s{i}", id=f"s{i}") for i in range(12)]
    deleted = acks[3]["seq"]
    assert (await bob.call("delete", room="secret", seq=deleted))["type"] == "ack"
    top = await bob.call("edit", room="secret", seq=acks[0]["seq"], text="s0!")

    async def persisted() -> bool:
        r = await get_messages(hist.url, "secret", service_token(), after=0, limit=200)
        return len(r.json()["events"]) >= 15 and r.json()["events"][-1]["seq"] >= 15

    await wait_for(persisted, what="persisted")
    assert top["type"] == "ack"
    page = await bob.call("history", room="secret", limit=5)
    assert page["type"] == "history" and page["more"] is True
    assert [e["seq"] for e in page["events"]] == list(range(11, 16))
    older = await bob.call("history", room="secret", before=11, limit=10)
    assert [e["seq"] for e in older["events"]] == list(range(1, 11)) and older["more"] is False
    by_seq = {e["seq"]: e for e in older["events"]}
    assert by_seq[acks[0]["seq"]]["data"]["text"] == "s0!"
    assert by_seq[deleted]["data"].get("deleted") is True and "text" not in by_seq[deleted]["data"]

    mallory = await WsClient.connect(gw.ws_url, "mallory")
    reply = await mallory.call("history", room="secret")
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    reply = await mallory.call("history", room="secret", limit=-1)
    assert reply["type"] == "error" and reply["code"] == "bad_request"
    await mallory.close()
    await bob.close()
