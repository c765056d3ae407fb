"""The server publish API with real processes: the rooms service, two gateways (and history for an
edit whose target left the recent buffer). An API publish reaches sockets on both gateways once,
with its seq; a retried publish appends nothing; a batch reaches each room with per-item errors;
edits and deletes follow the socket's rules; bad input is a 4xx; Redis down is 503, then works."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import JWT_SECRET, REDIS_URL, Cluster
from tests.gateway.helpers import client, recv_until, request
from tests.rooms.helpers import (
    FAST_ENV,
    ROOMS,
    api,
    auth,
    extra_deployment,
    keys,
    poll,
)
from tests.support.processes import ServiceProcess
from tests.support.proxy import CuttableProxy

GATEWAY = "roomstream_gateway"
HISTORY = "roomstream_history"


@dataclass
class Deployment:
    namespace: str
    history: ServiceProcess
    rooms: ServiceProcess
    gateways: list[ServiceProcess]


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    """History, rooms and two gateways, shared by the tests of this module (each uses rooms of its
    own). A recent buffer of 3 events: an edit of an older message is checked against history."""
    async with extra_deployment() as (namespace, database_url):
        env = {
            "REDIS_URL": REDIS_URL,
            "DATABASE_URL": database_url,
            "ROOMSTREAM_NAMESPACE": namespace,
            "ROOMSTREAM_JWT_SECRET": JWT_SECRET,
        }
        procs = Cluster(env, tmp_path_factory.mktemp("publish"))
        try:
            history = procs.start(HISTORY, name="history")
            rooms = procs.start(
                ROOMS,
                env={
                    **FAST_ENV,
                    "ROOMSTREAM_HISTORY_URL": history.url,
                    "ROOMSTREAM_RECENT_PER_ROOM": "3",
                    "ROOMSTREAM_PUBLISH_BATCH_MAX": "10",
                    "ROOMSTREAM_PUBLISH_MAX_BODY_BYTES": "65536",
                },
                name="rooms",
            )
            gateways = [
                procs.start(
                    GATEWAY,
                    env={"ROOMSTREAM_ROOMS_URL": rooms.url, "ROOMSTREAM_NODE_ID": f"gw-{n}"},
                    name=f"gw-{n}",
                    ready_path="/healthz",
                )
                for n in ("a", "b")
            ]
            yield Deployment(namespace, history, rooms, gateways)
        finally:
            procs.stop_all()


async def create(http: httpx.AsyncClient, room: str, owner: str, members: list[str], kind="public"):
    body = {"id": room, "name": room, "kind": kind, "members": members}
    r = await http.post("/rooms", json=body, headers=auth(owner))
    assert r.status_code == 201, r.text


async def drain(ws: Any) -> list[dict[str, Any]]:
    """Every room event this socket received before the reply to a ping sent now (the gateway
    writes a socket's frames in order)."""
    await ws.send('{"type":"ping","ref":"drain"}')
    frames = await recv_until(ws, lambda f: f["type"] == "pong" and f.get("ref") == "drain")
    return [f for f in frames if f["type"] == "event"]


def messages(events: list[dict[str, Any]], room: str) -> list[dict[str, Any]]:
    return [e for e in events if e["room"] == room and e["kind"] == "message"]


async def room_seq(redis: Any, namespace: str, room: str) -> int:
    k = keys(namespace)
    return int(await redis.hget(k.seq(k.room_shard(room)), room) or 0)


async def test_api_publish_reaches_both_gateways_once_and_a_retry_appends_nothing(
    deployment: Deployment, redis_client: Any
) -> None:
    rooms, (gw_a, gw_b) = deployment.rooms, deployment.gateways
    namespace = deployment.namespace
    async with api(rooms.url) as http:
        await create(http, "lobby", "alice", ["bob"])
        alice, _ = await client(gw_a.ws_url, "alice")
        bob, _ = await client(gw_b.ws_url, "bob")

        # As the service itself (the message's user is the token's sub).
        r = await http.post(
            "/rooms/lobby/messages", json={"text": "hello", "id": "p1"}, headers=auth()
        )
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["room"] == "lobby" and first["seq"] == 2 and first["id"]
        assert "idempotent-replayed" not in r.headers
        # A retry: the same answer, nothing appended.
        again = await http.post(
            "/rooms/lobby/messages", json={"text": "hello", "id": "p1"}, headers=auth()
        )
        assert again.status_code == 200 and again.json() == first
        assert again.headers["idempotent-replayed"] == "true"
        assert await room_seq(redis_client, namespace, "lobby") == 2

        # On behalf of a user (service only), and a user token as itself.
        r = await http.post(
            "/rooms/lobby/messages",
            json={"text": "from bob", "id": "p2", "user": "bob"},
            headers=auth(),
        )
        assert r.status_code == 200 and r.json()["seq"] == 3, r.text
        r = await http.post(
            "/rooms/lobby/messages", json={"text": "mine", "id": "a1"}, headers=auth("alice")
        )
        assert r.status_code == 200 and r.json()["seq"] == 4, r.text
        mine = r.json()
        r = await http.post(
            "/rooms/lobby/messages",
            json={"text": "x", "id": "a2", "user": "bob"},
            headers=auth("alice"),
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        # A user's API publishes and socket sends share one id space (ids are unique per user).
        ack = await request(alice, {"type": "send", "room": "lobby", "text": "mine", "id": "a1"})
        assert ack["type"] == "ack" and (ack["room"], ack["seq"], ack["id"]) == tuple(mine.values())
        assert await room_seq(redis_client, namespace, "lobby") == 4

        # Racing retries (the same id at once, to the same room and to another): one append.
        await create(http, "side", "alice", ["bob"])
        racing = await asyncio.gather(
            *(
                http.post(
                    f"/rooms/{'side' if i % 3 == 0 else 'lobby'}/messages",
                    json={"text": "race", "id": "race-1"},
                    headers=auth(),
                )
                for i in range(12)
            )
        )
        answers = [r.json() for r in racing if r.status_code == 200]
        # A loser that hit the other room while the winner's append was in flight is told so (400).
        assert all(r.status_code in (200, 400) for r in racing), [r.text for r in racing]
        assert answers and all(a == answers[0] for a in answers), answers
        won = answers[0]["room"]
        seqs = {room: await room_seq(redis_client, namespace, room) for room in ("lobby", "side")}
        assert seqs == {"lobby": 5 if won == "lobby" else 4, "side": 2 if won == "side" else 1}

        for ws in (alice, bob):
            got = messages(await drain(ws), "lobby")
            assert [(e["seq"], e["user"], e["data"]["text"]) for e in got] == [
                (2, "test-service", "hello"),
                (3, "bob", "from bob"),
                (4, "alice", "mine"),
            ] + ([(5, "test-service", "race")] if won == "lobby" else [])
            assert got[0]["id"] == first["id"] and got[0]["data"]["client_id"] == "p1"
        await alice.close()
        await bob.close()


async def test_batch_publish_reaches_each_room_with_per_item_results(
    deployment: Deployment, redis_client: Any
) -> None:
    rooms, (gw_a, gw_b) = deployment.rooms, deployment.gateways
    namespace = deployment.namespace
    async with api(rooms.url) as http:
        await create(http, "r1", "alice", ["bob"])
        await create(http, "r2", "bob", ["alice"])
        await create(http, "vault", "alice", [], kind="private")
        alice, _ = await client(gw_a.ws_url, "alice")
        bob, _ = await client(gw_b.ws_url, "bob")
        items = [
            {"room": "r1", "text": "one", "id": "b1"},
            {"room": "r2", "text": "two", "id": "b2", "user": "bob"},
            {"room": "nope", "text": "x", "id": "b3"},
            {"room": "r1", "text": 5, "id": "b4"},
            {"room": "r1", "text": "nul\x00", "id": "b5"},
            {"room": "r2", "text": "y" * 10_000, "id": "b6"},
            {"room": "r1", "text": "one", "id": "b1"},
            "not an object",
            {"room": "vault", "text": "service may post anywhere", "id": "b7"},
        ]
        r = await http.post("/messages", json={"messages": items}, headers=auth())
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        codes = [res.get("error", {}).get("code") for res in results]
        assert codes == [
            None,
            None,
            "not_found",
            "bad_request",
            "bad_request",
            "too_large",
            None,
            "bad_request",
            None,
        ], results
        assert results[0]["room"] == "r1" and results[0]["seq"] == 2
        assert results[1]["room"] == "r2" and results[1]["seq"] == 2
        assert results[6] == results[0]  # the same id again: the same answer, once
        assert results[8]["room"] == "vault" and results[8]["seq"] == 2

        # A user token: as itself, a member only (the socket's rule).
        r = await http.post(
            "/messages",
            json={
                "messages": [
                    {"room": "vault", "text": "x", "id": "u1"},
                    {"room": "r2", "text": "hi", "id": "u2"},
                ]
            },
            headers=auth("bob"),
        )
        assert [res.get("error", {}).get("code") for res in r.json()["results"]] == [
            "forbidden",
            None,
        ]
        assert r.json()["results"][1]["seq"] == 3

        # Bounded: more items than the limit is 413 and appends nothing.
        before = [await room_seq(redis_client, namespace, room) for room in ("r1", "r2")]
        many = [{"room": "r1", "text": "m", "id": f"m{i}"} for i in range(11)]
        r = await http.post("/messages", json={"messages": many}, headers=auth())
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
        for body in ({"messages": "no"}, {}, [1]):
            r = await http.post("/messages", json=body, headers=auth())
            assert r.status_code == 400, (body, r.text)
        assert [await room_seq(redis_client, namespace, room) for room in ("r1", "r2")] == before

        for ws in (alice, bob):
            events = await drain(ws)
            assert [(e["seq"], e["data"]["text"]) for e in messages(events, "r1")] == [(2, "one")]
            assert [(e["seq"], e["user"]) for e in messages(events, "r2")] == [
                (2, "bob"),
                (3, "bob"),
            ]
        assert await room_seq(redis_client, namespace, "r1") == 2
        await alice.close()
        await bob.close()


async def test_edits_and_deletes_through_the_api_reach_sockets(
    deployment: Deployment, redis_client: Any
) -> None:
    rooms, (gw_a, gw_b) = deployment.rooms, deployment.gateways
    async with api(rooms.url) as http:
        await create(http, "chat", "alice", ["bob"])
        alice, _ = await client(gw_a.ws_url, "alice")
        bob, _ = await client(gw_b.ws_url, "bob")

        async def publish(user: str, text: str, cid: str) -> int:
            r = await http.post(
                "/rooms/chat/messages", json={"text": text, "id": cid}, headers=auth(user)
            )
            assert r.status_code == 200, r.text
            return int(r.json()["seq"])

        mine = await publish("alice", "typo", "e1")
        r = await http.patch(
            f"/rooms/chat/messages/{mine}", json={"text": "fixed"}, headers=auth("alice")
        )
        assert r.status_code == 200, r.text
        edit_seq = r.json()["seq"]
        # Not bob's message; the service may edit any message, but only a message.
        r = await http.patch(
            f"/rooms/chat/messages/{mine}", json={"text": "hijack"}, headers=auth("bob")
        )
        assert r.status_code == 403, r.text
        r = await http.patch(
            f"/rooms/chat/messages/{mine}", json={"text": "moderated"}, headers=auth()
        )
        assert r.status_code == 200, r.text
        r = await http.patch("/rooms/chat/messages/1", json={"text": "x"}, headers=auth())
        assert r.status_code == 403, r.text  # seq 1 is room_created
        r = await http.delete(f"/rooms/chat/messages/{mine}", headers=auth("alice"))
        assert r.status_code == 200, r.text
        delete_seq = r.json()["seq"]
        for call in (
            http.patch(
                f"/rooms/chat/messages/{mine}", json={"text": "again"}, headers=auth("alice")
            ),
            http.delete(f"/rooms/chat/messages/{mine}", headers=auth()),
            http.delete("/rooms/chat/messages/999", headers=auth()),
        ):
            r = await call
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
        r = await http.delete("/rooms/chat/messages/abc", headers=auth())
        assert r.status_code == 400, r.text

        for ws in (alice, bob):
            got = [e for e in await drain(ws) if e["room"] == "chat" and (e.get("seq") or 0) > 1]
            assert [(e["seq"], e["kind"], e["data"].get("target_seq")) for e in got] == [
                (mine, "message", None),
                (edit_seq, "message_edited", mine),
                (edit_seq + 1, "message_edited", mine),
                (delete_seq, "message_deleted", mine),
            ]
            assert got[1]["user"] == "alice" and got[2]["user"] == "test-service"

        # An old message (out of the 3-event recent buffer): its owner check goes to history.
        # (MAXLEN ~ trims whole stream nodes: about 100 entries go at once.)
        old = await publish("bob", "old", "o1")
        recent = keys(deployment.namespace).recent("chat")
        for batch in range(30):
            if not await redis_client.xrange(recent, f"{old}-0", f"{old}-0"):
                break
            fill = [{"room": "chat", "text": "f", "id": f"f{batch}-{i}"} for i in range(10)]
            r = await http.post("/messages", json={"messages": fill}, headers=auth("alice"))
            assert r.status_code == 200 and "error" not in str(r.json()), r.text
        assert await redis_client.xrange(recent, f"{old}-0", f"{old}-0") == []

        async def in_history() -> bool:
            async with api(deployment.history.url) as h:
                r = await h.get(
                    "/rooms/chat/messages", params={"after": old - 1, "limit": 1}, headers=auth()
                )
                return r.status_code == 200 and [e["seq"] for e in r.json()["events"]] == [old]

        await poll(in_history)
        r = await http.patch(
            f"/rooms/chat/messages/{old}", json={"text": "x"}, headers=auth("alice")
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        r = await http.patch(
            f"/rooms/chat/messages/{old}", json={"text": "new"}, headers=auth("bob")
        )
        assert r.status_code == 200, r.text
        late_edit = r.json()["seq"]
        for ws in (alice, bob):
            edits = [e for e in await drain(ws) if e["kind"] == "message_edited"]
            assert [(e["seq"], e["data"]) for e in edits] == [
                (late_edit, {"target_seq": old, "text": "new"})
            ]
        await alice.close()
        await bob.close()


async def test_bad_input_is_a_4xx_and_appends_nothing(
    deployment: Deployment, redis_client: Any
) -> None:
    rooms, namespace = deployment.rooms, deployment.namespace
    async with api(rooms.url) as http:
        await create(http, "strict", "alice", [])
        url = "/rooms/strict/messages"
        cases: list[tuple[str, dict[str, Any], int]] = [
            (url, {"json": {"text": "hi", "id": "x"}, "headers": {}}, 401),
            (url, {"json": {"text": "hi", "id": "x"}, "headers": auth(token="not-a-jwt")}, 401),
            (url, {"content": b"{not json", "headers": auth()}, 400),
            (url, {"json": ["text"], "headers": auth()}, 400),
            (url, {"json": {"text": 5, "id": "x"}, "headers": auth()}, 400),
            (url, {"json": {"text": "hi"}, "headers": auth()}, 400),
            (url, {"json": {"text": "hi", "id": 7}, "headers": auth()}, 400),
            (url, {"json": {"text": "a\x00b", "id": "x"}, "headers": auth()}, 400),
            (url, {"json": {"text": "hi", "id": "x\x00"}, "headers": auth()}, 400),
            (url, {"json": {"text": "hi", "id": "x" * 129}, "headers": auth()}, 400),
            (url, {"json": {"text": "hi", "id": ""}, "headers": auth()}, 400),
            (url, {"json": {"text": "hi", "id": "x", "user": 3}, "headers": auth()}, 400),
            (url, {"json": {"text": "hi", "id": "x", "user": ""}, "headers": auth()}, 400),
            (url, {"content": b'{"text": "\\ud800", "id": "x"}', "headers": auth()}, 400),
            (url, {"json": {"text": "y" * 10_000, "id": "x"}, "headers": auth()}, 413),
            (url, {"json": {"text": "z" * 70_000, "id": "x"}, "headers": auth()}, 413),
            (
                "/rooms/Bad%20Room/messages",
                {"json": {"text": "hi", "id": "x"}, "headers": auth()},
                400,
            ),
            ("/rooms/nope/messages", {"json": {"text": "hi", "id": "x"}, "headers": auth()}, 404),
        ]
        for path, kwargs, status in cases:
            r = await http.post(path, **kwargs)
            assert r.status_code == status, (path, kwargs.get("json"), r.status_code, r.text)
            assert r.json()["error"]["code"], r.text
        # Reads of this path are the history service's: here a 405 with an error body, not 500.
        r = await http.get(url, headers=auth())
        assert r.status_code == 405 and r.json()["error"]["code"] == "bad_request", r.text
        r = await http.patch("/rooms/strict/messages/1", json={"text": 1}, headers=auth())
        assert r.status_code == 400, r.text
        r = await http.patch("/rooms/strict/messages/0", json={"text": "x"}, headers=auth())
        assert r.status_code == 400, r.text
        r = await http.patch(f"/rooms/strict/messages/{2**62}", json={"text": "x"}, headers=auth())
        assert r.status_code == 400, r.text
        r = await http.patch(
            "/rooms/strict/messages/1", json={"text": "y" * 10_000}, headers=auth()
        )
        assert r.status_code == 413, r.text
        assert await room_seq(redis_client, namespace, "strict") == 1
        assert rooms.running


async def test_redis_down_is_503_then_publishing_recovers(
    cluster: Cluster, namespace: str, redis_client: Any
) -> None:
    proxy, redis_url = await CuttableProxy.before_redis(REDIS_URL)
    env = {**FAST_ENV, "REDIS_URL": redis_url}
    # Started from a thread: the proxy runs on this event loop and must keep serving meanwhile.
    rooms = await asyncio.to_thread(cluster.start, ROOMS, env=env)
    try:
        async with api(rooms.url) as http:
            await create(http, "ops", "alice", [])
            r = await http.post(
                "/rooms/ops/messages", json={"text": "a", "id": "r1"}, headers=auth()
            )
            assert r.status_code == 200 and r.json()["seq"] == 2

            await proxy.cut()
            for call in (
                lambda: http.post(
                    "/rooms/ops/messages", json={"text": "b", "id": "r2"}, headers=auth()
                ),
                lambda: http.post(
                    "/messages",
                    json={"messages": [{"room": "ops", "text": "c", "id": "r3"}]},
                    headers=auth(),
                ),
                lambda: http.patch("/rooms/ops/messages/2", json={"text": "e"}, headers=auth()),
                lambda: http.delete("/rooms/ops/messages/2", headers=auth()),
            ):
                r = await call()
                assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text

            await proxy.restore()

            async def published() -> bool:
                r = await http.post(
                    "/rooms/ops/messages", json={"text": "b", "id": "r2"}, headers=auth()
                )
                assert r.status_code in (200, 503), r.text
                return r.status_code == 200

            await poll(published)
            r = await http.post(
                "/rooms/ops/messages", json={"text": "b", "id": "r2"}, headers=auth()
            )
            assert r.json()["seq"] == 3  # appended once, whatever the outage did
            assert await room_seq(redis_client, namespace, "ops") == 3
            assert rooms.running
    finally:
        await proxy.cut()
