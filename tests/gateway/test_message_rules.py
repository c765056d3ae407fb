"""Issue 9 item 10: a deleted message stays deleted (no edit, no second delete), and a client
message id is unique per user (the same id sent to another room returns the original ack and
appends nothing), with a real gateway."""

from __future__ import annotations

import orjson

from tests.gateway.helpers import (
    client,
    create_room,
    events_of,
    keys,
    log_events,
    recv_until,
    request,
)

GATEWAY = "roomstream_gateway"


async def test_a_deleted_message_cannot_be_edited_or_deleted_again(
    cluster, namespace, redis_client
):
    await create_room(redis_client, namespace, "main", "ann", members=["ben"])
    gw = cluster.start(GATEWAY)
    ann, _ = await client(gw.ws_url, "ann")
    ben, _ = await client(gw.ws_url, "ben")

    sent = await request(ann, {"type": "send", "room": "main", "text": "oops", "id": "m1"})
    deleted = await request(ann, {"type": "delete", "room": "main", "seq": sent["seq"]})
    assert deleted["type"] == "ack", deleted
    for frame in (
        {"type": "edit", "room": "main", "seq": sent["seq"], "text": "secret edit"},
        {"type": "delete", "room": "main", "seq": sent["seq"]},
    ):
        reply = await request(ann, frame)
        assert reply["type"] == "error" and reply["code"] == "not_found", (frame, reply)
    # Other messages are still editable; the refused commands appended nothing.
    other = await request(ann, {"type": "send", "room": "main", "text": "v1", "id": "m2"})
    edited = await request(ann, {"type": "edit", "room": "main", "seq": other["seq"], "text": "v2"})
    assert edited["type"] == "ack" and edited["seq"] == other["seq"] + 1, edited
    got = await events_of(ben, "main", 4, kind=None)
    assert [e["kind"] for e in got] == ["message", "message_deleted", "message", "message_edited"]
    assert all(e["data"].get("text") != "secret edit" for e in got)
    texts = [e["data"].get("text") for e in await log_events(redis_client, namespace)]
    assert "secret edit" not in texts


async def test_a_client_id_is_unique_per_user_across_rooms(cluster, namespace, redis_client):
    await create_room(redis_client, namespace, "one", "ann", members=["ben"])
    await create_room(redis_client, namespace, "two", "ann", members=["ben"])
    gw = cluster.start(GATEWAY)
    ann, _ = await client(gw.ws_url, "ann")
    ben, _ = await client(gw.ws_url, "ben")
    k = keys(namespace)

    first = await request(ann, {"type": "send", "room": "one", "text": "hello", "id": "same"})
    assert first["type"] == "ack" and first["room"] == "one"
    again = await request(ann, {"type": "send", "room": "two", "text": "hello", "id": "same"})
    # The original ack (room `one`), and nothing appended to `two`.
    assert (again["type"], again["room"], again["seq"], again["id"]) == (
        "ack",
        "one",
        first["seq"],
        first["id"],
    )
    assert int(await redis_client.hget(k.seq(k.room_shard("two")), "two")) == 1
    # Another user's `same` is its own id; ann's next id to `two` is a new message there.
    bens = await request(ben, {"type": "send", "room": "two", "text": "b", "id": "same"})
    assert bens["type"] == "ack" and (bens["room"], bens["seq"]) == ("two", 2)
    nxt = await request(ann, {"type": "send", "room": "two", "text": "new", "id": "other"})
    assert (nxt["room"], nxt["seq"]) == ("two", 3)
    got = await events_of(ben, "two", 2)
    assert [(e["user"], e["data"]["text"]) for e in got] == [("ben", "b"), ("ann", "new")]
    await ben.send(orjson.dumps({"type": "ping", "ref": "q"}).decode())
    late = await recv_until(ben, lambda f: f.get("ref") == "q")
    assert [f for f in late if f.get("room") == "one" and f.get("seq", 0) > first["seq"]] == []
