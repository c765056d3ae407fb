"""The publish hook with real gateway processes and a real hook endpoint the test runs (verifying
every request's Standard Webhooks signature): it rejects a send (error, nothing appended, the
room's seq unchanged), rewrites one (every client and the replay get the new text), a hook that
does not answer in time follows `open` (appended as sent) or `closed` (`unavailable`, nothing
appended), a retry of an approved send gets its original ack whatever the hook says later, and a
hanging hook holds neither the event loop nor other sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import redis.asyncio as aioredis
from roomstream_gateway.publish_hook import message_id
from websockets.asyncio.client import ClientConnection

from tests.conftest import Cluster
from tests.gateway.helpers import client, create_room, events_of, keys, log_events, recv, request
from tests.gateway.hook_receiver import HookReceiver
from tests.hooks.helpers import wait_for
from tests.hooks.receiver import SECRET_A
from tests.support.processes import ServiceProcess

GATEWAY = "roomstream_gateway"


async def start_gateway(
    cluster: Cluster, hook: HookReceiver, failure: str = "closed", timeout_ms: int = 5000
) -> ServiceProcess:
    env = {
        "ROOMSTREAM_PUBLISH_HOOK_URL": hook.url,
        "ROOMSTREAM_PUBLISH_HOOK_SECRET": SECRET_A,
        "ROOMSTREAM_PUBLISH_HOOK_FAILURE": failure,
        "ROOMSTREAM_PUBLISH_HOOK_TIMEOUT_MS": str(timeout_ms),
    }
    # From a thread: the hook runs on this event loop and keeps serving meanwhile.
    return await asyncio.to_thread(cluster.start, GATEWAY, env=env)


async def room_seq(redis: aioredis.Redis, namespace: str, room: str) -> int:
    k = keys(namespace)
    return int(await redis.hget(k.seq(k.room_shard(room)), room) or 0)


async def texts(redis: aioredis.Redis, namespace: str) -> list[str]:
    return [e["data"]["text"] for e in await log_events(redis, namespace) if e["kind"] == "message"]


async def nothing_after(ws: ClientConnection, room: str, seq: int) -> None:
    """A ping barrier: no event of `room` after `seq` reached `ws` before its pong."""
    await ws.send(orjson.dumps({"type": "ping", "ref": "barrier"}).decode())
    while (frame := await recv(ws))["type"] != "pong":
        assert not (frame["type"] == "event" and frame["room"] == room and frame["seq"] > seq), (
            frame
        )


_open: list[ClientConnection] = []


async def connect(ws_url: str, user: str) -> ClientConnection:
    """An authenticated socket (welcome read), closed by `close_all`."""
    ws, _ = await client(ws_url, user)
    _open.append(ws)
    return ws


async def close_all() -> None:
    """Close the test's sockets (the gateways then stop at once, not after a close timeout)."""
    while _open:
        await _open.pop().close()


def moderate(ask: dict[str, Any]) -> dict[str, Any] | None:
    text = ask["text"]
    if "spam" in text:
        return {"action": "reject", "reason": "no spam here"}
    if "shout" in text:
        return {"action": "reject", "reason": "too loud", "code": "bad_request"}
    if "darn" in text:
        return {"action": "replace", "text": text.replace("darn", "d**n")}
    if "quiet" in text:
        return None  # empty 204: allowed
    return {"action": "allow"}


async def test_the_hook_rejects_and_rewrites_sends(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    await create_room(redis_client, namespace, "main", "ann", members=["ben", "cat"])
    hook = await HookReceiver(SECRET_A, decide=moderate).start()
    try:
        gw = await start_gateway(cluster, hook)
        other = await asyncio.to_thread(cluster.start, GATEWAY)  # no hook: it only delivers
        ann = await connect(gw.ws_url, "ann")
        ben = await connect(other.ws_url, "ben")

        ok = await request(ann, {"type": "send", "room": "main", "text": "hello", "id": "m1"})
        assert ok["type"] == "ack" and ok["seq"] == 2, ok
        before = await room_seq(redis_client, namespace, "main")

        rejected = await request(ann, {"type": "send", "room": "main", "text": "spam!", "id": "m2"})
        assert (rejected["type"], rejected["code"], rejected["message"]) == (
            "error",
            "forbidden",
            "no spam here",
        )
        loud = await request(ann, {"type": "send", "room": "main", "text": "shout", "id": "m3"})
        assert (loud["type"], loud["code"], loud["message"]) == ("error", "bad_request", "too loud")
        assert await room_seq(redis_client, namespace, "main") == before  # nothing appended

        rewritten = await request(
            ann, {"type": "send", "room": "main", "text": "oh darn it", "id": "m4"}
        )
        quiet = await request(ann, {"type": "send", "room": "main", "text": "quiet", "id": "m5"})
        assert (rewritten["seq"], quiet["seq"]) == (before + 1, before + 2)

        got = await events_of(ben, "main", 3)
        assert [e["data"]["text"] for e in got] == ["hello", "oh d**n it", "quiet"]
        await nothing_after(ben, "main", quiet["seq"])
        # The log has the replacement, never the original or a rejected text; a client that
        # joins with `since` replays the replacement.
        assert await texts(redis_client, namespace) == ["hello", "oh d**n it", "quiet"]
        cat = await connect(other.ws_url, "cat")
        joined = await request(cat, {"type": "join", "room": "main", "since": 1})
        assert joined["type"] == "joined" and joined["recovered"], joined
        replayed = await events_of(cat, "main", 3)
        assert [e["data"]["text"] for e in replayed] == ["hello", "oh d**n it", "quiet"]

        # What the hook was asked, signed (verified by the receiver with the reference library).
        assert hook.bad_signatures == 0
        assert [a["text"] for a in hook.asks] == ["hello", "spam!", "shout", "oh darn it", "quiet"]
        first = hook.asks[0]
        assert (first["type"], first["room"], first["user"], first["id"]) == (
            "publish",
            "main",
            "ann",
            "m1",
        )
        assert first["conn"] and first["node"]
        assert hook.headers[0]["webhook-id"] == message_id("ann", "m1")
    finally:
        await close_all()
        await hook.stop()


async def test_a_hook_that_times_out_follows_fail_open_or_fail_closed(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    await create_room(redis_client, namespace, "main", "ann", members=["ben"])
    hook = await HookReceiver(SECRET_A, decide=moderate, delay_s=1.5).start()
    try:
        open_gw = await start_gateway(cluster, hook, failure="open", timeout_ms=300)
        closed_gw = await start_gateway(cluster, hook, failure="closed", timeout_ms=300)
        ann = await connect(open_gw.ws_url, "ann")
        ben = await connect(closed_gw.ws_url, "ben")

        # fail-open: appended as sent, even a text the hook would have rejected.
        sent = await request(ann, {"type": "send", "room": "main", "text": "spam", "id": "o1"})
        assert sent["type"] == "ack" and sent["seq"] == 2, sent
        assert [e["data"]["text"] for e in await events_of(ben, "main", 1)] == ["spam"]

        # fail-closed: unavailable, nothing appended, nobody gets an event.
        refused = await request(ben, {"type": "send", "room": "main", "text": "hi", "id": "c1"})
        assert (refused["type"], refused["code"]) == ("error", "unavailable"), refused
        assert "publish hook" in refused["message"]
        assert await room_seq(redis_client, namespace, "main") == 2
        assert await texts(redis_client, namespace) == ["spam"]
        await nothing_after(ann, "main", 2)
        await asyncio.sleep(1.5)  # the held answers arrive late: none of them appends anything
        assert await room_seq(redis_client, namespace, "main") == 2
        assert {a["id"] for a in hook.asks} <= {"o1", "c1"} and hook.bad_signatures == 0
    finally:
        await close_all()
        await hook.stop()


async def test_a_retry_of_an_approved_send_gets_its_original_ack(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    await create_room(redis_client, namespace, "main", "ann", members=["ben"])
    hook = await HookReceiver(SECRET_A, decide=moderate).start()
    try:
        gw = await start_gateway(cluster, hook, failure="closed", timeout_ms=2000)
        ann = await connect(gw.ws_url, "ann")
        frame = {"type": "send", "room": "main", "text": "oh darn", "id": "r1"}
        first = await request(ann, dict(frame))
        assert first["type"] == "ack", first

        # The hook changed its mind (rejects now), then stops answering in time (fail-closed):
        # the retried id still gets the original ack, and nothing is appended again.
        hook.decide = lambda ask: {"action": "reject", "reason": "changed my mind"}
        again = await request(ann, dict(frame))
        hook.delay_s = 4.0  # beyond the gateway's 2 s
        late = await request(ann, dict(frame))
        hook.delay_s = 0.0
        hook.decide = lambda ask: {"action": "replace", "text": "something else"}
        rewritten = await request(ann, dict(frame))
        for reply in (again, late, rewritten):
            assert (reply["type"], reply["seq"], reply["id"], reply["room"]) == (
                "ack",
                first["seq"],
                first["id"],
                "main",
            ), reply
        assert await texts(redis_client, namespace) == ["oh d**n"]
        # A new id is still refused by the rejecting hook.
        hook.decide = lambda ask: {"action": "reject", "reason": "no"}
        new = await request(ann, {**frame, "id": "r2"})
        assert (new["type"], new["code"], new["message"]) == ("error", "forbidden", "no")
        assert await room_seq(redis_client, namespace, "main") == first["seq"]
        # The hook is gone (connection refused): fail-closed for a new id, the original ack for
        # the appended one.
        await hook.stop()
        gone = await request(ann, {**frame, "id": "r3"})
        assert (gone["type"], gone["code"]) == ("error", "unavailable"), gone
        again = await request(ann, dict(frame))
        assert (again["type"], again["seq"], again["id"]) == ("ack", first["seq"], first["id"])
        assert await room_seq(redis_client, namespace, "main") == first["seq"]
    finally:
        await close_all()
        await hook.stop()


async def test_a_hanging_hook_holds_no_other_socket(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    await create_room(redis_client, namespace, "main", "ann", members=["ben"])
    hook = await HookReceiver(SECRET_A, decide=moderate).start()
    hook.gate.clear()  # every answer waits until the test opens the gate
    try:
        gw = await start_gateway(cluster, hook, failure="closed", timeout_ms=60_000)
        ann = await connect(gw.ws_url, "ann")
        ben = await connect(gw.ws_url, "ben")
        await ann.send(orjson.dumps({"type": "send", "room": "main", "text": "x", "id": "h1"}))
        await wait_for(lambda: hook.asks, what="the gateway asking the hook")
        # Another socket of the same gateway is served meanwhile: its ping, its typing event
        # (delivered to ann, whose own command is still waiting for the hook).
        pong = await request(ben, {"type": "ping"})
        assert pong["type"] == "pong"
        await ben.send(orjson.dumps({"type": "typing", "room": "main"}).decode())
        typing = await recv(ann)
        assert typing == {"type": "typing", "room": "main", "user": "ben"}, typing
        assert await room_seq(redis_client, namespace, "main") == 1  # not appended yet
        hook.gate.set()
        frames = [await recv(ann), await recv(ann)]  # the ack and ann's own event, either order
        ack = next(f for f in frames if f["type"] == "ack")
        assert ack["seq"] == 2, frames
    finally:
        await close_all()
        await hook.stop()
