"""No entry stalls a consumer, with real processes (gateway, rooms, history, monitor).

- Poison entries XADDed straight into the log (the edges refuse NUL now): a `message` whose text
  holds U+0000 (Postgres refuses it: history fails deterministically) and a `member_joined` of a
  user id with U+0000 (rooms and history fail). Each is dead-lettered by the groups that cannot
  handle it, counted, shown in the monitor's stats; later messages of the same shard reach
  Postgres and the latest history page, and the rooms projection applies the room's later events
  (an API write on the room answers instead of waiting on the skipped seq).
- A Postgres outage during processing (a cut TCP proxy) dead-letters nothing: the entries are
  retried until Postgres is back, and `/readyz` says the consumer is stuck meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog, RoomCheck

from tests.conftest import REDIS_URL, Cluster, make_token, service_token
from tests.history.helpers import create_room, send, wait_for
from tests.history.wsclient import WsClient
from tests.support.proxy import CuttableProxy
from tests.support.together import Spec, start_together

NUL = "\x00"


def service_auth() -> dict[str, str]:
    return {"authorization": f"Bearer {service_token()}"}


async def dead_letters(redis: aioredis.Redis, keys: StreamKeys) -> list[dict[str, str]]:
    out = []
    for shard in range(keys.shards):
        for _, fields in await redis.xrange(keys.dead_letters(shard)):
            out.append({k.decode(): v.decode(errors="replace") for k, v in fields.items()})
    return out


async def test_poison_entries_are_dead_lettered_and_the_shard_keeps_flowing(
    cluster: Cluster, namespace: str, database_url: str
) -> None:
    fast = {"ROOMSTREAM_POLL_MS": "20", "ROOMSTREAM_RECLAIM_IDLE_MS": "2000"}
    rooms_spec = Spec("roomstream_rooms", "rooms", fast)
    rooms, history, gw, monitor = await start_together(
        cluster,
        rooms_spec,
        Spec("roomstream_history", "history", {**fast, "ROOMSTREAM_ROOMS_URL": rooms_spec.url}),
        Spec(
            "roomstream_gateway",
            "gw",
            {"ROOMSTREAM_ROOMS_URL": rooms_spec.url},
            ready_path="/healthz",
        ),
        Spec("roomstream_monitor", "monitor", {"ROOMSTREAM_STATS_INTERVAL_S": "0.2"}),
    )
    redis = aioredis.Redis.from_url(REDIS_URL)
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis, keys)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(
                f"{rooms.url}/rooms",
                json={"id": "lobby", "name": "Lobby", "kind": "public"},
                headers={"authorization": f"Bearer {make_token('ann')}"},
            )
            assert r.status_code == 201, r.text
            ann = await WsClient.connect(gw.ws_url, "ann")
            ack = await ann.call("send", room="lobby", text="before", id="b")
            assert ack["seq"] == 2

            # The poison, appended like any event (seq, recent buffer), bypassing the edges.
            def poison(kind: EventKind, user: str, data: dict[str, object]) -> Envelope:
                return Envelope(
                    id=new_event_id(), kind=kind, room="lobby", user=user, ts=now_ms(), data=data
                )

            bad_text = await log.append(
                poison(EventKind.MESSAGE, "ann", {"text": f"a{NUL}b", "client_id": "p"}),
                room_check=RoomCheck.EXISTS,
            )
            bad_member = await log.append(
                poison(EventKind.MEMBER_JOINED, f"ev{NUL}il", {"by": "ann"}),
                room_check=RoomCheck.EXISTS,
            )
            assert (bad_text.seq, bad_member.seq) == (3, 4)
            later = []
            for i in range(5):
                ack = await ann.call("send", room="lobby", text=f"after-{i}", id=f"a{i}")
                assert ack["type"] == "ack", ack
                later.append(ack["seq"])
            assert later == [5, 6, 7, 8, 9]

            # Later messages of the shard reach Postgres and the latest history page.
            conn = await asyncpg.connect(database_url)
            try:

                async def persisted() -> bool:
                    n = await conn.fetchval(
                        "SELECT count(*) FROM history_events WHERE room = 'lobby' AND seq >= 5"
                    )
                    return int(n) == 5

                await wait_for(persisted, deadline_s=30, what="later messages persisted")
                seqs = [
                    r["seq"]
                    for r in await conn.fetch(
                        "SELECT seq FROM history_events WHERE room = 'lobby' ORDER BY seq"
                    )
                ]
                assert seqs == [1, 2, 5, 6, 7, 8, 9]
            finally:
                await conn.close()
            page = await http.get(f"{history.url}/rooms/lobby/messages", headers=service_auth())
            assert page.status_code == 200, page.text
            texts = [e["data"].get("text") for e in page.json()["events"] if e["kind"] == "message"]
            assert texts == ["before"] + [f"after-{i}" for i in range(5)]

            # The rooms projection went past the skipped seq 4: an API write on the room is
            # applied (it waits for its own seq 10), and the room's seq is current.
            r = await http.put(f"{rooms.url}/rooms/lobby/members/bob", headers=service_auth())
            assert r.status_code == 200, r.text
            assert r.json()["seq"] == 10
            r = await http.get(f"{rooms.url}/rooms/lobby/members", headers=service_auth())
            assert sorted(r.json()["members"]) == ["ann", "bob"]

            # Dead letters: history refused both poison entries, rooms the member one.
            async def all_dead() -> bool:
                return len(await dead_letters(redis, keys)) >= 3

            await wait_for(all_dead, deadline_s=30, what="three dead letters")
            dead = await dead_letters(redis, keys)
            by_group = sorted(
                (d["group"], orjson.loads(d["f:e"])["seq"], d["error"].split(":")[0]) for d in dead
            )
            assert [(g, s) for g, s, _ in by_group] == [
                ("history", 3),
                ("history", 4),
                ("rooms", 4),
            ]
            assert all(
                e in ("UntranslatableCharacterError", "CharacterNotInRepertoireError")
                for _, _, e in by_group
            ), by_group
            shard = keys.room_shard("lobby")
            assert all(d["stream"] == keys.log(shard) for d in dead)
            counts = await redis.hgetall(keys.dead_letter_counts(shard))
            assert counts == {b"history": b"2", b"rooms": b"1"}

            # Counted in each service's metrics, shown by the monitor; everyone is ready.
            metrics = (await http.get(f"{history.url}/metrics")).text
            assert re.search(r'dead_letters_total\{group="history"[^}]*\} 2\.0', metrics)
            metrics = (await http.get(f"{rooms.url}/metrics")).text
            assert re.search(r'dead_letters_total\{group="rooms"[^}]*\} 1\.0', metrics)

            async def shown() -> bool:
                r = await http.get(f"{monitor.url}/api/stats", headers=service_auth())
                return r.status_code == 200 and r.json()["dead_letters"] == {
                    "history": 2,
                    "rooms": 1,
                }

            await wait_for(shown, deadline_s=20, what="dead letters in the monitor's stats")
            stats = (await http.get(f"{monitor.url}/api/stats", headers=service_auth())).json()
            assert stats["consumer_stuck"] == []
            for proc in (rooms, history, monitor):
                r = await http.get(f"{proc.url}/readyz")
                assert r.status_code == 200, (proc.name, r.text)
            await ann.close()

        # A rebuild from the log replays the poison entry too: it stays skipped.
        rooms.terminate()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "roomstream_rooms",
            "rebuild",
            env={**os.environ, **cluster.env, "ROOMSTREAM_LOG_LEVEL": "WARNING"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, stderr.decode()
        conn = await asyncpg.connect(database_url)
        try:
            members = await conn.fetch("SELECT user_id FROM memberships WHERE room = 'lobby'")
            assert sorted(r["user_id"] for r in members) == ["ann", "bob"]
            assert await conn.fetchval("SELECT last_seq FROM rooms WHERE id = 'lobby'") == 10
        finally:
            await conn.close()
    finally:
        await redis.aclose()


async def test_a_postgres_outage_dead_letters_nothing(
    cluster: Cluster, namespace: str, database_url: str
) -> None:
    proxy, via_proxy = await CuttableProxy.before_postgres(database_url)
    env = {
        "DATABASE_URL": via_proxy,
        "ROOMSTREAM_POLL_MS": "20",
        "ROOMSTREAM_CONSUMER_MAX_ATTEMPTS": "2",
        "ROOMSTREAM_CONSUMER_STUCK_AFTER_S": "1",
    }
    # From a thread: the proxy runs on this event loop and must keep serving meanwhile.
    [history] = await start_together(cluster, Spec("roomstream_history", "history", env))
    redis = aioredis.Redis.from_url(REDIS_URL)
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis, keys)
    conn = await asyncpg.connect(database_url)
    try:
        await create_room(log, "ops", "ann")
        for i in range(5):
            await send(log, "ops", "ann", f"m{i}")

        async def stored(n: int) -> bool:
            count = await conn.fetchval("SELECT count(*) FROM history_events WHERE room = 'ops'")
            return int(count) >= n

        await wait_for(lambda: stored(6), deadline_s=30, what="first messages")
        await proxy.cut()
        for i in range(5, 25):
            await send(log, "ops", "ann", f"m{i}")

        async with httpx.AsyncClient(timeout=10) as http:

            async def stuck() -> bool:
                r = await http.get(f"{history.url}/readyz")
                return r.status_code == 503 and "unfinished" in r.text

            await wait_for(stuck, deadline_s=30, what="/readyz to say the consumer is stuck")
            await asyncio.sleep(2)  # well past CONSUMER_MAX_ATTEMPTS failures
            await proxy.restore()
            await wait_for(lambda: stored(26), deadline_s=60, what="all messages after the outage")

            async def ready() -> bool:
                return (await http.get(f"{history.url}/readyz")).status_code == 200

            await wait_for(ready, deadline_s=30, what="ready again")
        assert await dead_letters(redis, keys) == []
        texts = [
            r["t"]
            for r in await conn.fetch(
                "SELECT data->>'text' AS t FROM history_events "
                "WHERE room = 'ops' AND kind = 'message' ORDER BY seq"
            )
        ]
        assert texts == [f"m{i}" for i in range(25)]
    finally:
        await conn.close()
        await redis.aclose()
        await proxy.cut()
