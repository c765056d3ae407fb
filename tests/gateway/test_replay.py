"""`join` with `since`: missed events from Redis, then live ones, no gap or duplicate at the seam;
membership changes in the log subscribe and unsubscribe connected sockets."""

from __future__ import annotations

import asyncio

from roomstream_contracts.events import EventKind

from tests.gateway.helpers import (
    append_member_event,
    client,
    create_room,
    events_of,
    keys,
    recv,
    request,
    send_acked,
)

GATEWAY = "roomstream_gateway"


async def test_join_since_replays_missed_then_live_without_dup(cluster, namespace, redis_client):
    await create_room(redis_client, namespace, "main", "alice", members=["bob"])
    env = {"ROOMSTREAM_SEND_BURST": "1000"}
    a = cluster.start(GATEWAY, env=env)
    b = cluster.start(GATEWAY, env=env)
    alice, _ = await client(a.ws_url, "alice")
    bob, _ = await client(b.ws_url, "bob")
    for i in range(3):
        await send_acked(alice, "main", f"before-{i}")
    seen = await events_of(bob, "main", 3)
    last = seen[-1]["seq"]
    assert last == 4
    await bob.close()

    for i in range(5):
        await send_acked(alice, "main", f"missed-{i}")
    bob, welcome = await client(a.ws_url, "bob")  # the other gateway this time
    assert welcome["rooms"]["main"]["seq"] == last + 5
    joined = await request(bob, {"type": "join", "room": "main", "since": last})
    assert joined["type"] == "joined"
    assert (joined["seq"], joined["missed"], joined["recovered"]) == (last + 5, 5, True)
    missed = await events_of(bob, "main", 5)
    assert [e["seq"] for e in missed] == list(range(last + 1, last + 6))
    assert [e["data"]["text"] for e in missed] == [f"missed-{i}" for i in range(5)]
    await send_acked(alice, "main", "live")
    (live,) = await events_of(bob, "main", 1)
    assert live["seq"] == last + 6

    # The seam, socket already subscribed by its welcome: a rejoin with `since` while messages
    # keep arriving gives each seq exactly once (live ones after the welcome are not replayed).
    await bob.close()
    since = last + 6
    bob, _ = await client(b.ws_url, "bob")

    async def talk(tag: str) -> None:
        for i in range(40):
            await send_acked(alice, "main", f"{tag}-{i}")

    talker = asyncio.create_task(talk("seam"))
    await asyncio.sleep(0.05)
    joined = await request(bob, {"type": "join", "room": "main", "since": since})
    assert joined["recovered"] is True
    await talker
    seqs: list[int] = []
    while len(seqs) < 40:
        frame = await recv(bob)
        if frame["type"] == "event" and frame["room"] == "main":
            seqs.append(frame["seq"])
    assert sorted(seqs) == list(range(since + 1, since + 41))

    # The seam, socket not subscribed yet (a newcomer joining a public room with `since`):
    # joined, the replay and then live events, strictly in seq order, each once.
    dave, _ = await client(b.ws_url, "dave")
    since = since + 40
    talker = asyncio.create_task(talk("seam2"))
    await asyncio.sleep(0.05)
    joined = await request(dave, {"type": "join", "room": "main", "since": since})
    await talker
    end = since + 41  # 40 messages and dave's own member_joined
    seqs = []
    while not seqs or seqs[-1] < end:
        frame = await recv(dave)
        if frame["type"] == "event" and frame["room"] == "main":
            seqs.append(frame["seq"])
    assert seqs == list(range(since + 1, end + 1))
    assert joined["missed"] <= joined["seq"] - since
    await dave.close()
    since = end

    # Nothing to replay: since equal to the current seq.
    again = await request(bob, {"type": "join", "room": "main", "since": since})
    assert (again["missed"], again["recovered"], again["seq"]) == (0, True, since)
    await bob.close()
    await alice.close()


async def test_replay_needing_history_is_unavailable_without_it(cluster, namespace, redis_client):
    await create_room(redis_client, namespace, "main", "alice")
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_HISTORY_URL": "http://127.0.0.1:9"})
    alice, _ = await client(gw.ws_url, "alice")
    for i in range(6):
        await send_acked(alice, "main", f"m{i}")
    # The recent buffer lost seqs 2..4 (as capping does): they must come from history.
    await redis_client.xtrim(keys(namespace).recent("main"), minid="5-0", approximate=False)
    await alice.close()
    alice, welcome = await client(gw.ws_url, "alice")
    assert welcome["rooms"]["main"]["seq"] == 7
    err = await request(alice, {"type": "join", "room": "main", "since": 1})
    assert (err["type"], err["code"]) == ("error", "unavailable")
    # Replay that Redis can serve alone still works.
    ok = await request(alice, {"type": "join", "room": "main", "since": 5})
    assert (ok["missed"], ok["recovered"]) == (2, True)
    await alice.close()


async def test_membership_events_subscribe_and_unsubscribe_live_sockets(
    cluster, namespace, redis_client
):
    await create_room(redis_client, namespace, "main", "alice")
    await create_room(redis_client, namespace, "other", "alice", members=["carol"])
    gw = cluster.start(GATEWAY)
    alice, _ = await client(gw.ws_url, "alice")
    carol, welcome = await client(gw.ws_url, "carol")
    assert set(welcome["rooms"]) == {"other"}
    refused = await request(carol, {"type": "send", "room": "main", "text": "x", "id": "x"})
    assert refused["code"] == "forbidden"

    # Added by someone else (the rooms API): carol starts receiving without reconnecting.
    seq = await append_member_event(
        redis_client, namespace, "main", "carol", EventKind.MEMBER_JOINED
    )
    (joined,) = await events_of(carol, "main", 1, kind="member_joined")
    assert joined["seq"] == seq and joined["user"] == "carol"
    await send_acked(alice, "main", "welcome carol")
    (msg,) = await events_of(carol, "main", 1)
    assert msg["data"]["text"] == "welcome carol"
    assert (await send_acked(carol, "main", "thanks"))["seq"] == seq + 2

    # Removed: carol gets member_left, then nothing more of the room.
    await append_member_event(redis_client, namespace, "main", "carol", EventKind.MEMBER_LEFT)
    (left,) = await events_of(carol, "main", 1, kind="member_left")
    assert left["user"] == "carol"
    await send_acked(alice, "main", "secret stuff")
    await send_acked(alice, "other", "marker")
    frames = []
    while True:
        frame = await recv(carol)
        frames.append(frame)
        if frame.get("room") == "other" and frame["type"] == "event":
            break
    assert not [f for f in frames if f.get("room") == "main" and f["type"] == "event"]
    await alice.close()
    await carol.close()
