"""The publish API under attack and under faults, with real processes: the rooms service and the
history service on a redis-server of this module's own, reached through a TCP proxy the tests
cut ("Redis dies mid-request") and whose scripts they flush (SCRIPT FLUSH never touches the
shared server). Every bad input is a 4xx with the protocol's error body and appends nothing; a
retried call answers the first call's body byte for byte; a batch retried after a cut appends
each id once; the service keeps serving throughout."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import JWT_SECRET, Cluster, make_token
from tests.rooms.helpers import FAST_ENV, ROOMS, api, auth, extra_deployment, keys
from tests.support.processes import ServiceProcess, free_port
from tests.support.proxy import CuttableProxy
from tests.support.redis_server import OwnRedis, require_redis_server

HISTORY = "roomstream_history"


@dataclass
class Deployment:
    namespace: str
    own: OwnRedis
    proxy: CuttableProxy
    redis: aioredis.Redis
    rooms: ServiceProcess


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    require_redis_server()
    server = OwnRedis(tmp_path_factory.mktemp("own-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def deployment(
    own_redis: OwnRedis, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    """History and rooms (default limits: 100 items, 1 MiB bodies, 8000 characters) on the
    module's redis-server behind a cuttable proxy; the tests use rooms of their own."""
    proxy, redis_url = await CuttableProxy.before_redis(own_redis.url)
    async with extra_deployment() as (namespace, database_url):
        env = {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "ROOMSTREAM_NAMESPACE": namespace,
            "ROOMSTREAM_JWT_SECRET": JWT_SECRET,
        }
        procs = Cluster(env, tmp_path_factory.mktemp("publish-adversarial"))
        direct = aioredis.Redis.from_url(own_redis.url)
        try:
            # From threads (both at once): the proxy runs on this event loop and must serve.
            history_port = free_port()
            _, rooms = await asyncio.gather(
                asyncio.to_thread(procs.start, HISTORY, port=history_port, name="history"),
                asyncio.to_thread(
                    procs.start,
                    ROOMS,
                    env={**FAST_ENV, "ROOMSTREAM_HISTORY_URL": f"http://127.0.0.1:{history_port}"},
                    name="rooms",
                ),
            )
            yield Deployment(namespace, own_redis, proxy, direct, rooms)
        finally:
            await asyncio.to_thread(procs.stop_all)
            await direct.aclose()
            await proxy.cut()


async def create(http: httpx.AsyncClient, room: str, owner: str, members: list[str], kind="public"):
    """A room, as set-up: the tests of this module share one deployment, and right after an earlier
    test's Redis cut the service's pool may still answer one `unavailable` (retry, as documented)
    while it reconnects; bounded."""
    body = {"id": room, "name": room, "kind": kind, "members": members}
    retried = False
    for _ in range(40):
        r = await http.post("/rooms", json=body, headers=auth(owner))
        if r.status_code != 503:
            break
        retried = True
        await asyncio.sleep(0.25)
    # 409 only after a 503 whose create had reached the log before its answer was lost.
    assert r.status_code == 201 or (retried and r.status_code == 409), r.text


async def room_seq(d: Deployment, room: str) -> int:
    k = keys(d.namespace)
    return int(await d.redis.hget(k.seq(k.room_shard(room)), room) or 0)


async def logged_ids(d: Deployment, room: str) -> list[str]:
    """The client ids of the room's messages in its recent buffer, in seq order."""
    entries = await d.redis.xrange(keys(d.namespace).recent(room))
    events = [orjson.loads(fields[b"e"]) for _, fields in entries]
    return [e["data"]["client_id"] for e in events if e["kind"] == "message"]


def assert_error(r: httpx.Response, status: int | None = None) -> None:
    """A 4xx (or exactly `status`) with the protocol's error body."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)


def raw_token(payload: bytes) -> str:
    """An HS256 token over `payload` exactly as given (e.g. a `\\ud800` escape in `sub`)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    signing = f"{header}.{b64(payload)}"
    sig = hmac.new(JWT_SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(sig)}"


async def test_wrong_types_odd_text_and_odd_paths_are_4xx_and_append_nothing(
    deployment: Deployment,
) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "adv", "alice", ["bob"])
        url = "/rooms/adv/messages"
        bodies: list[Any] = [
            {"text": ["hi"], "id": "t1"},
            {"text": {"a": 1}, "id": "t1"},
            {"text": None, "id": "t1"},
            {"text": True, "id": "t1"},
            {"text": "hi", "id": 1},
            {"text": "hi", "id": 1.5},
            {"text": "hi", "id": ["t1"]},
            {"text": "hi", "id": None},
            {"text": "hi", "id": "t1", "user": ""},
            {"text": "hi", "id": "t1", "user": 0},
            {"text": "hi", "id": "t1", "user": ["bob"]},
            {"text": "hi", "id": "t1", "user": "u" * 129},
            {"text": "hi", "id": "t1", "user": "bo\x00b"},
            {"id": "t1"},
            {"text": "hi"},
            {},
            [],
            None,
            "text",
            7,
        ]
        for body in bodies:
            assert_error(await http.post(url, content=orjson.dumps(body), headers=auth()))
        raw: list[bytes] = [
            b'{"text": "\\ud800", "id": "t1"}',
            b'{"text": "hi", "id": "\\udfff"}',
            b'{"text": "hi", "id": "t1", "user": "\\ud83d"}',
            b'{"text": "\xff\xfe", "id": "t1"}',
            b'{"text": "hi", "id": "t1"',
            b"",
            b"[" * 100_000,
        ]
        for content in raw:
            assert_error(await http.post(url, content=content, headers=auth()), 400)
        # 10 kB over the 8000-character limit; 1 MB over the body limit; both not appended.
        assert_error(
            await http.post(url, json={"text": "y" * 10_000, "id": "t1"}, headers=auth()), 413
        )
        assert_error(
            await http.post(url, json={"text": "é" * 600_000, "id": "t1"}, headers=auth()), 413
        )

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"text": "'
            for _ in range(40):
                yield b"z" * 65536
            yield b'", "id": "t1"}'

        # Chunked (no Content-Length), over the bound: 413, not read to the end.
        assert_error(await http.post(url, content=chunks(), headers=auth()), 413)

        for path in (
            "/rooms/Adv/messages",
            f"/rooms/{'a' * 65}/messages",
            "/rooms/a.b/messages",
            "/rooms/a%00/messages",
            "/rooms/a%0A/messages",
            "/rooms/%F0%9F%98%80/messages",
            "/rooms/a%20b/messages",
            "/rooms/%ED%A0%80/messages",
        ):
            assert_error(await http.post(path, json={"text": "hi", "id": "t1"}, headers=auth()))

        # 8000 astral characters (32 kB) is the limit in characters; 8001 is over it.
        r = await http.post(url, json={"text": "\U0001f600" * 8001, "id": "t1"}, headers=auth())
        assert_error(r, 413)
        for content in (
            b'{"text": "hi", "id": "t1", "n": 1e400}',
            b'{"text": "hi", "id": "t1", "\\ud800": 1}',
        ):
            assert_error(await http.post(url, content=content, headers=auth()), 400)
        # Without a content type, a JSON body is still JSON.
        r = await http.post(url, content=b'{"text": "plain", "id": "t-ok"}', headers=auth())
        assert r.status_code == 200 and r.json()["seq"] == 2, r.text
        assert await room_seq(d, "adv") == 2
        assert await logged_ids(d, "adv") == ["t-ok"]
        assert d.rooms.running


async def test_seq_paths_and_edit_bodies_are_4xx(deployment: Deployment) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "seqs", "alice", ["bob"])
        r = await http.post(
            "/rooms/seqs/messages", json={"text": "m", "id": "s1"}, headers=auth("alice")
        )
        assert r.status_code == 200 and r.json()["seq"] == 2, r.text
        for seq in (
            "0",
            "-1",
            "1.5",
            "1e3",
            "0x2",
            "%202",
            "2%20",
            "+2",
            "\u0662",  # ARABIC-INDIC DIGIT TWO
            str(2**62),
            "9" * 40,
            "two",
        ):
            path = f"/rooms/seqs/messages/{seq}"
            assert_error(await http.patch(path, json={"text": "x"}, headers=auth()), 400)
            assert_error(await http.delete(path, headers=auth()), 400)
        for body in ({"text": ["x"]}, {"text": None}, {}, [], {"text": "a\x00"}):
            assert_error(await http.patch("/rooms/seqs/messages/2", json=body, headers=auth()), 400)
        assert_error(
            await http.patch(
                "/rooms/seqs/messages/2", content=b'{"text": "\\ud800"}', headers=auth()
            ),
            400,
        )
        # Not a message: room_created (1), a member's join; past the end: 404.
        r = await http.put("/rooms/seqs/members/carol", headers=auth())
        assert r.status_code < 300, r.text
        joined = await room_seq(d, "seqs")
        assert joined == 3
        for seq, status in ((1, 403), (joined, 403), (10**6, 404)):
            assert_error(
                await http.patch(f"/rooms/seqs/messages/{seq}", json={"text": "x"}, headers=auth()),
                status,
            )
            assert_error(await http.delete(f"/rooms/seqs/messages/{seq}", headers=auth()), status)
        # A user editing / deleting another's message, or as a non-member.
        for user in ("bob", "mallory"):
            assert_error(
                await http.patch("/rooms/seqs/messages/2", json={"text": "x"}, headers=auth(user)),
                403,
            )
            assert_error(await http.delete("/rooms/seqs/messages/2", headers=auth(user)), 403)
        assert await room_seq(d, "seqs") == joined
        assert d.rooms.running


async def test_batch_shapes_duplicates_and_bounds(deployment: Deployment) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "bat", "alice", ["bob"])
        await create(http, "bat2", "alice", ["bob"])
        for body in (
            {"messages": {"room": "bat", "text": "x", "id": "x"}},
            {"messages": "x"},
            {"messages": None},
            {"messages": 3},
            {"message": []},
            [],
        ):
            assert_error(await http.post("/messages", json=body, headers=auth()), 400)
        too_many = [{"room": "bat", "text": "m", "id": f"m{i}"} for i in range(101)]
        assert_error(await http.post("/messages", json={"messages": too_many}, headers=auth()), 413)
        r = await http.post("/messages", json={"messages": []}, headers=auth())
        assert r.status_code == 200 and r.json() == {"results": []}, r.text

        items: list[Any] = [
            {"room": "bat", "text": "first", "id": "dup"},
            {"room": "bat", "text": "second", "id": "dup"},
            {"room": "bat2", "text": "third", "id": "dup"},
            {"room": "bat", "id": "no-text"},
            {"room": "bat", "text": "no id"},
            {"text": "no room", "id": "nr"},
            {"room": 5, "text": "x", "id": "r5"},
            {"room": "BAT", "text": "x", "id": "r6"},
            {"room": "bat", "text": ["x"], "id": "r7"},
            {"room": "bat", "text": "x", "id": "r8", "user": ""},
            None,
            [],
            3,
            {"room": "bat", "text": "x" * 8001, "id": "r9"},
        ]
        r = await http.post("/messages", json={"messages": items}, headers=auth())
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == len(items)
        assert results[0] == results[1] == results[2], results[:3]
        assert results[0]["room"] == "bat" and results[0]["seq"] == 2
        for res in results[3:]:
            assert set(res) == {"error"} and res["error"]["code"] in ("bad_request", "too_large")
        assert await room_seq(d, "bat") == 2 and await room_seq(d, "bat2") == 1

        # A user token naming another user, and on a private room it is not a member of.
        await create(http, "bat-vault", "alice", [], kind="private")
        r = await http.post(
            "/messages",
            json={
                "messages": [
                    {"room": "bat", "text": "x", "id": "u1", "user": "alice"},
                    {"room": "bat-vault", "text": "x", "id": "u2"},
                    {"room": "bat-vault", "text": "x", "id": "u3", "user": "bob"},
                ]
            },
            headers=auth("bob"),
        )
        assert [res["error"]["code"] for res in r.json()["results"]] == ["forbidden"] * 3
        assert_error(
            await http.post(
                "/rooms/bat-vault/messages", json={"text": "x", "id": "u4"}, headers=auth("bob")
            ),
            403,
        )
        assert await room_seq(d, "bat-vault") == 1 and await room_seq(d, "bat") == 2
        assert d.rooms.running


async def test_tokens_expired_revoked_or_with_odd_subjects_are_refused(
    deployment: Deployment,
) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "tok", "alice", ["dave"])
        url = "/rooms/tok/messages"
        body = {"text": "x", "id": "k1"}
        expired = make_token("dave", ttl_s=-60)
        assert_error(await http.post(url, json=body, headers=auth(token=expired)), 401)
        now = int(time.time())
        old = raw_token(orjson.dumps({"sub": "dave", "iat": now - 100, "exp": now + 3600}))
        r = await http.post(url, json=body, headers=auth(token=old))
        assert r.status_code == 200, r.text
        r = await http.post("/users/dave/revoke", json={"before": now - 10}, headers=auth())
        assert r.status_code in (200, 202, 204), r.text
        for call in (
            http.post(url, json={"text": "x", "id": "k2"}, headers=auth(token=old)),
            http.post(
                "/messages",
                json={"messages": [{"room": "tok", "text": "x", "id": "k3"}]},
                headers=auth(token=old),
            ),
            http.patch("/rooms/tok/messages/2", json={"text": "y"}, headers=auth(token=old)),
            http.delete("/rooms/tok/messages/2", headers=auth(token=old)),
        ):
            assert_error(await call, 401)
        for payload in (
            b'{"sub": "\\ud800", "exp": %d}' % (now + 3600),
            b'{"sub": "a\\u0000b", "exp": %d}' % (now + 3600),
            b'{"sub": "", "exp": %d}' % (now + 3600),
            b'{"sub": 5, "exp": %d}' % (now + 3600),
            b'{"sub": "%s", "exp": %d}' % (b"s" * 200, now + 3600),
            b'{"sub": "dave"}',
            b'{"sub": "dave", "exp": "soon"}',
            b'{"sub": "dave", "exp": %d, "role": ["service"]}' % (now + 3600),
            b'{"sub": "dave", "exp": %d, "role": 1}' % (now + 3600),
            b'{"sub": "dave", "exp": %d, "nbf": %d}' % (now + 3600, now + 3000),
            b'["dave"]',
        ):
            for role in (b"", b', "role": "service"'):
                token = raw_token(payload[:-1] + role + payload[-1:] if role else payload)
                assert_error(await http.post(url, json=body, headers=auth(token=token)), 401)
        unsigned = raw_token(b'{"sub": "dave", "exp": %d}' % (now + 3600)).rsplit(".", 1)[0]
        none = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
        for token in (unsigned + ".", f"{none}.{unsigned.split('.')[1]}.", "a.b.c", "x" * 10_000):
            assert_error(await http.post(url, json=body, headers=auth(token=token)), 401)
        assert await room_seq(d, "tok") == 2
        assert d.rooms.running


async def test_retries_across_single_and_batch_answer_the_same_bytes_once(
    deployment: Deployment,
) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "idem", "alice", ["bob"])
        single = {"text": "once", "id": "same", "user": "bob"}
        batch = {"messages": [{"room": "idem", **single}]}
        calls = [
            http.post("/rooms/idem/messages", json=single, headers=auth())
            if i % 2
            else http.post("/messages", json=batch, headers=auth())
            for i in range(16)
        ]
        replies = await asyncio.gather(*calls)
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        answers = [r.json() if "room" in r.json() else r.json()["results"][0] for r in replies]
        assert all(a == answers[0] for a in answers), answers
        assert await room_seq(d, "idem") == 2 and await logged_ids(d, "idem") == ["same"]
        # Retried later, one call by one: byte for byte the first single answer.
        first = next(r for r in replies if "room" in r.json())
        for _ in range(2):
            again = await http.post("/rooms/idem/messages", json=single, headers=auth())
            assert again.content == first.content
            assert again.headers["idempotent-replayed"] == "true"
        # bob's own token shares the id space: the same answer.
        r = await http.post("/rooms/idem/messages", json=single, headers=auth("bob"))
        assert r.content == first.content
        assert await room_seq(d, "idem") == 2


async def test_script_flush_is_survived_by_single_and_batch_publishes(
    deployment: Deployment,
) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "flush", "alice", [])
        r = await http.post("/rooms/flush/messages", json={"text": "a", "id": "f0"}, headers=auth())
        assert r.status_code == 200, r.text
        for round_ in range(2):
            await d.redis.script_flush()
            items = [{"room": "flush", "text": "b", "id": f"f{round_}-{i}"} for i in range(20)]
            single, batch = await asyncio.gather(
                http.post(
                    "/rooms/flush/messages",
                    json={"text": "c", "id": f"fs{round_}"},
                    headers=auth(),
                ),
                http.post("/messages", json={"messages": items}, headers=auth()),
            )
            assert single.status_code == 200, single.text
            assert batch.status_code == 200 and "error" not in batch.text, batch.text
        assert await room_seq(d, "flush") == 2 + 2 * 21
        assert len(set(await logged_ids(d, "flush"))) == 1 + 2 * 21


async def test_redis_cut_mid_batch_then_retry_appends_each_id_once(
    deployment: Deployment,
) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        rooms = [f"cut{n}" for n in range(4)]
        for room in rooms:
            await create(http, room, "alice", [])
        total = 0
        for attempt in range(6):
            items = [
                {"room": rooms[i % 4], "text": "t", "id": f"c{attempt}-{i}"} for i in range(100)
            ]
            total += 100
            call = asyncio.ensure_future(
                http.post("/messages", json={"messages": items}, headers=auth())
            )
            await asyncio.sleep((0.0, 0.002, 0.005, 0.01, 0.02, 0.04)[attempt])
            await d.proxy.cut()
            first = await call
            assert first.status_code in (200, 503), first.text
            if first.status_code == 503:
                assert first.json()["error"]["code"] == "unavailable"
            await d.proxy.restore()
            r = await until_ok(
                lambda body={"messages": items}: http.post("/messages", json=body, headers=auth())
            )
            results = r.json()["results"]
            assert all("seq" in res for res in results), results
            if first.status_code == 200:
                assert first.json() == r.json()
        counts = [await room_seq(d, room) - 1 for room in rooms]
        assert sum(counts) == total, counts
        for room in rooms:
            ids = await logged_ids(d, room)
            assert len(ids) == len(set(ids)), room
        assert d.rooms.running


async def test_redis_cut_mid_single_publish_and_edit_keeps_serving(
    deployment: Deployment,
) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "cuts", "alice", [])
        body = {"text": "x", "id": "cs1"}
        call = asyncio.ensure_future(http.post("/rooms/cuts/messages", json=body, headers=auth()))
        await d.proxy.cut()
        first = await call
        assert first.status_code in (200, 503), first.text
        assert "error" in first.json() or first.json()["seq"] == 2
        await d.proxy.restore()
        r = await until_ok(lambda: http.post("/rooms/cuts/messages", json=body, headers=auth()))
        assert r.json()["seq"] == 2, r.text
        assert await room_seq(d, "cuts") == 2


async def test_redis_out_of_memory_is_503_and_appends_nothing(deployment: Deployment) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "oom", "alice", [])
        r = await http.post("/rooms/oom/messages", json={"text": "a", "id": "o1"}, headers=auth())
        assert r.status_code == 200, r.text
        await d.redis.config_set("maxmemory-policy", "noeviction")
        await d.redis.config_set("maxmemory", "1")
        try:
            for call in (
                http.post("/rooms/oom/messages", json={"text": "b", "id": "o2"}, headers=auth()),
                http.post(
                    "/messages",
                    json={
                        "messages": [{"room": "oom", "text": "c", "id": f"o{i}"} for i in (3, 4)]
                    },
                    headers=auth(),
                ),
                http.patch("/rooms/oom/messages/2", json={"text": "e"}, headers=auth()),
                http.delete("/rooms/oom/messages/2", headers=auth()),
            ):
                assert_error_or_503(await call)
        finally:
            await d.redis.config_set("maxmemory", "0")
        assert await room_seq(d, "oom") == 2
        # Redis closes some clients while out of memory: the first calls after may be 503.
        r = await until_ok(
            lambda: http.post("/rooms/oom/messages", json={"text": "b", "id": "o2"}, headers=auth())
        )
        assert r.json()["seq"] == 3, r.text


async def until_ok(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """`call()` again while it answers 503 `unavailable` (bounded), then its 200 answer."""
    for _ in range(200):
        r = await call()
        if r.status_code == 200:
            return r
        assert_error_or_503(r)
        await asyncio.sleep(0.05)
    raise AssertionError(f"still unavailable: {r.text}")


def assert_error_or_503(r: httpx.Response) -> None:
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text


async def test_ids_and_users_with_colons_do_not_share_an_idempotency_key(
    deployment: Deployment,
) -> None:
    """(user "alice", id "b:c") and (user "alice:b", id "c") are two different messages."""
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "colon", "alice", ["alice:b"])
        r = await http.post(
            "/rooms/colon/messages", json={"text": "alice's", "id": "b:c"}, headers=auth("alice")
        )
        assert r.status_code == 200 and r.json()["seq"] == 2, r.text
        r = await http.post(
            "/rooms/colon/messages",
            json={"text": "other user's", "id": "c", "user": "alice:b"},
            headers=auth(),
        )
        assert r.status_code == 200, r.text
        assert "idempotent-replayed" not in r.headers, r.json()
        assert r.json()["seq"] == 3, r.json()
        assert await logged_ids(d, "colon") == ["b:c", "c"]


async def internal_errors(http: httpx.AsyncClient) -> float:
    """`roomstream_rooms_api_errors_total{code="internal"}` as /metrics says now."""
    text = (await http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("roomstream_rooms_api_errors_total") and 'code="internal"' in line
    )


async def test_a_client_that_leaves_mid_body_is_no_internal_error(deployment: Deployment) -> None:
    d = deployment
    async with api(d.rooms.url) as http:
        await create(http, "gone", "alice", [])
        before = await internal_errors(http)
        port = int(d.rooms.url.rsplit(":", 1)[1])
        # The publish routes and a CRUD route: every body goes through kit.http.json_body.
        for path in ("/rooms/gone/messages", "/messages", "/rooms"):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            head = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: {auth()['Authorization']}\r\nContent-Length: 5000\r\n\r\n"
            )
            writer.write(head.encode() + b'{"text": "')
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.5)
        assert await internal_errors(http) == before
        assert await room_seq(d, "gone") == 1
        r = await http.post("/rooms/gone/messages", json={"text": "a", "id": "g1"}, headers=auth())
        assert r.status_code == 200, r.text
