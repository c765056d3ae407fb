"""Redis states that mean "try again" answer `unavailable`, never `internal` (issue 9 item 7).

A redis-server of the test's own: restarted with enough data (and `key-load-delay`) that it answers
LOADING for seconds while it reads its append-only file back, or kept busy by a long script (BUSY).
Sends through the gateway get `unavailable` meanwhile (a client retrying `unavailable` with the same
id loses nothing), the rooms API answers 503, and every process keeps running.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from roomstream_contracts.errors import CloseCode
from websockets.exceptions import ConnectionClosed

from tests.gateway.helpers import client, open_ws, recv, request
from tests.rooms.helpers import FAST_ENV, ROOMS, auth
from tests.support.processes import free_port
from tests.support.redis_server import OwnRedis, require_redis_server

GATEWAY = "roomstream_gateway"


@pytest.fixture
def loading_redis(tmp_path: Path):
    """Own redis-server that takes seconds to load its data after a restart."""
    require_redis_server()
    # 50 µs per key loaded (~110 µs with the sleep's overhead) and, since the file is small,
    # clients served every KB loaded (the default is every 2 MB: nobody would get LOADING).
    server = OwnRedis(
        tmp_path / "redis",
        [
            "--key-load-delay",
            "50",
            "--loading-process-events-interval-bytes",
            "1024",
            "--busy-reply-threshold",
            "100",
        ],
    )
    server.dir.mkdir()
    server.start()
    assert server.client().config_get("key-load-delay") == {"key-load-delay": "50"}
    yield server
    server.stop()


def _deploy(cluster, redis_url: str):
    env = {"REDIS_URL": redis_url}
    rooms = cluster.start(ROOMS, env={**FAST_ENV, **env}, name="rooms")
    gateway = cluster.start(
        GATEWAY,
        env={**env, "ROOMSTREAM_ROOMS_URL": rooms.url, "ROOMSTREAM_NODE_ID": "gw-try"},
        name="gw-try",
        ready_path="/healthz",
    )
    return rooms, gateway


async def _send(ws, cid: str) -> dict:
    return await request(ws, {"type": "send", "room": "lobby", "text": cid, "id": cid})


def _errors_logged(*procs) -> list[str]:
    """Error-level log lines of the processes that mention a Redis "try again" reply."""
    out = []
    for proc in procs:
        for line in proc.log_path.read_text(errors="replace").splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                if "LOADING" in line or "BUSY" in line:
                    out.append(line)
                continue
            text = str(rec.get("msg", "")) + str(rec.get("exc", ""))
            if rec.get("level") in ("error", "critical") and ("LOADING" in text or "BUSY" in text):
                out.append(line[:300])
    return out


async def _until_acked(ws, ids: list[str], deadline_s: float = 30.0) -> dict[str, dict]:
    """Retry each send (same id) until acknowledged, as a client retrying `unavailable` does."""
    acks: dict[str, dict] = {}
    deadline = time.monotonic() + deadline_s
    while len(acks) < len(ids):
        assert time.monotonic() < deadline, f"not acknowledged: {set(ids) - set(acks)}"
        for cid in ids:
            if cid not in acks:
                reply = await _send(ws, cid)
                assert reply.get("code") != "internal", reply
                if reply["type"] == "ack":
                    acks[cid] = reply
        await asyncio.sleep(0.1)
    return acks


async def test_sends_while_redis_loads_its_aof_are_unavailable(cluster, loading_redis):
    loading_redis.fill(30_000)  # LOADING for about 3 s
    rooms, gateway = _deploy(cluster, loading_redis.url)
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10.0) as http:
        r = await http.post(
            "/rooms", json={"id": "lobby", "name": "Lobby", "kind": "public"}, headers=auth("alice")
        )
        assert r.status_code == 201, r.text
        alice, _ = await client(gateway.ws_url, "alice")
        assert (await _send(alice, "before"))["type"] == "ack"

        loading_redis.stop()
        loading_redis.start(wait_loaded=False)  # returns once it answers LOADING
        during: list[tuple[str, dict]] = []
        statuses: list[int] = []
        n = 0
        while loading_redis.state() == "loading":
            n += 1
            cid = f"during-{n}"
            reply = await _send(alice, cid)
            if loading_redis.state() == "loading":  # still loading after the reply came
                during.append((cid, reply))
                statuses.append(
                    (await http.get("/rooms/lobby/members", headers=auth("alice"))).status_code
                )
            if n == 1:  # a new socket meanwhile: "try again later" (1013), not 1011
                bob = await open_ws(gateway.ws_url, "bob")
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(bob, 10)
                if loading_redis.state() == "loading":
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == CloseCode.TRY_AGAIN_LATER, closed.value
            await asyncio.sleep(0.05)
        print(f"{len(during)} sends while Redis was loading; HTTP statuses {set(statuses)}")
        assert len(during) >= 3, "Redis did not stay in LOADING long enough to test"
        for _, reply in during:
            assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        assert set(statuses) <= {200, 503}, statuses  # never a 500
        assert 503 in statuses or not statuses or set(statuses) == {200}

        # Loaded: the retried sends (same ids) succeed, each once.
        acks = await _until_acked(alice, [cid for cid, _ in during])
        seqs = [a["seq"] for a in acks.values()]
        assert len(set(seqs)) == len(seqs)
        assert rooms.running and gateway.running
        assert _errors_logged(rooms, gateway) == []
        await alice.close()


async def test_busy_script_answers_unavailable(cluster, loading_redis):
    rooms, gateway = _deploy(cluster, loading_redis.url)
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10.0) as http:
        r = await http.post(
            "/rooms", json={"id": "lobby", "name": "Lobby", "kind": "public"}, headers=auth("alice")
        )
        assert r.status_code == 201, r.text
        alice, _ = await client(gateway.ws_url, "alice")
        assert (await _send(alice, "before"))["type"] == "ack"

        # A script that runs for 3 s: past busy-reply-threshold every other client gets BUSY.
        busy = threading.Thread(
            target=loading_redis.client(10).eval,
            args=(
                "local s = tonumber(redis.call('TIME')[1]) "
                "while tonumber(redis.call('TIME')[1]) - s < 3 do end return 1",
                0,
            ),
        )
        busy.start()
        await asyncio.sleep(0.5)
        replies = []
        statuses = []
        for n in range(5):
            replies.append(await _send(alice, f"busy-{n}"))
            statuses.append((await http.get("/rooms/lobby", headers=auth("alice"))).status_code)
            if not busy.is_alive():
                break
        busy.join(10)
        assert replies and all(
            r["type"] == "error" and r["code"] == "unavailable" for r in replies
        ), replies
        assert set(statuses) <= {200, 503} and 500 not in statuses, statuses
        await _until_acked(alice, [f"busy-{n}" for n in range(len(replies))])
        assert rooms.running and gateway.running
        await alice.close()


async def test_replica_after_a_failover_answers_unavailable(cluster, loading_redis):
    """The gateway's Redis turns into a replica (as after a failover elsewhere): writes answer
    READONLY, and with replica-serve-stale-data off reads answer MASTERDOWN. Both `unavailable`
    (HTTP 503), and everything works again once it is a master."""
    rooms, gateway = _deploy(cluster, loading_redis.url)
    admin = loading_redis.client()
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10.0) as http:
        r = await http.post(
            "/rooms", json={"id": "lobby", "name": "Lobby", "kind": "public"}, headers=auth("alice")
        )
        assert r.status_code == 201, r.text
        alice, _ = await client(gateway.ws_url, "alice")
        assert (await _send(alice, "before"))["type"] == "ack"

        dead_master = free_port()  # nothing listens there: the replica never syncs
        admin.replicaof("127.0.0.1", dead_master)
        try:
            readonly = [await _send(alice, f"ro-{n}") for n in range(3)]
            assert all(r.get("code") == "unavailable" for r in readonly), readonly
            created = await http.post(
                "/rooms", json={"id": "r2", "name": "R2", "kind": "public"}, headers=auth("alice")
            )
            assert created.status_code == 503, created.text
            assert created.json()["error"]["code"] == "unavailable"

            admin.config_set("replica-serve-stale-data", "no")
            presence = await request(alice, {"type": "presence", "room": "lobby"})
            assert presence["type"] == "error" and presence["code"] == "unavailable", presence
            members = await http.get("/rooms/lobby/members", headers=auth("alice"))
            assert members.status_code in (200, 503), members.text  # Postgres may answer
        finally:
            admin.replicaof("NO", "ONE")
        await _until_acked(alice, [f"ro-{n}" for n in range(3)])
        assert rooms.running and gateway.running
        await alice.close()
