"""The presence grace under a fault (`presence_grace`, the rooms service's "presence-grace" task):
Redis goes away for the rooms service while `offline`s are held past their grace; when it comes
back each of them reaches the log exactly once (none lost, none appended twice)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from roomstream_contracts.events import EventKind

from tests.conftest import REDIS_URL
from tests.rooms.helpers import FAST_ENV, ROOMS, api, append, auth, conn_event, log_envelopes, poll
from tests.support.proxy import CuttableProxy

GRACE_S = 2.0
USERS = [f"u{i}" for i in range(30)]  # 30 users × 2 rooms: 60 offlines, two append chunks
ROOM_IDS = ("hall", "den")
FAILED = "appending the held offline events failed"


async def test_held_offlines_survive_a_redis_cut_once_each(
    cluster, namespace, redis_client
) -> None:
    proxy, redis_url = await CuttableProxy.before_redis(REDIS_URL)
    env = {**FAST_ENV, "REDIS_URL": redis_url, "ROOMSTREAM_PRESENCE_GRACE_S": str(GRACE_S)}
    # Started from a thread: the proxy runs on this event loop and must keep serving meanwhile.
    rooms = await asyncio.to_thread(cluster.start, ROOMS, env=env)
    try:
        async with api(rooms.url) as http:
            for room in ROOM_IDS:
                body = {"id": room, "name": room, "kind": "public", "members": USERS}
                r = await http.post("/rooms", json=body, headers=auth("u0"))
                assert r.status_code == 201, r.text

            async def presence(room: str) -> dict[str, int]:
                r = await http.get(f"/rooms/{room}/presence", headers=auth("u0"))
                return {u["user"]: u["connections"] for u in r.json()["users"]}

            async def offlines() -> list[dict]:
                return [
                    e
                    for e in await log_envelopes(redis_client, namespace)
                    if e["kind"] == "offline"
                ]

            for u in USERS:
                await append(
                    redis_client, namespace, conn_event(EventKind.CONNECTED, u, "g1", f"{u}-1")
                )
            await poll(lambda: _is(presence("hall"), dict.fromkeys(USERS, 1)))
            # Every user leaves (the gateways reach Redis: the cut is only the rooms service's).
            for u in USERS:
                await append(
                    redis_client, namespace, conn_event(EventKind.DISCONNECTED, u, "g1", f"{u}-1")
                )
            await poll(lambda: _is(presence("den"), {}))
            # Applied: the offlines are held now, and Redis goes away before their grace is over.
            await proxy.cut()
            assert await offlines() == []
            # The grace passes during the cut: the task tries (and fails) to append them.
            await poll(lambda: _logged(rooms.log_path, FAILED), deadline_s=30)
            await asyncio.sleep(GRACE_S)
            assert await offlines() == []

            await proxy.restore()
            expected = {(u, room) for u in USERS for room in ROOM_IDS}
            await poll(lambda: _count(offlines(), len(expected)), deadline_s=30)
            # Past the longest retry delay: nothing more comes.
            await asyncio.sleep(6.0)
            sent = Counter((e["user"], e["room"]) for e in await offlines())
            assert set(sent) == expected
            assert [pair for pair, n in sent.items() if n > 1] == []  # none appended twice
            assert rooms.running
            assert await presence("hall") == {}
    finally:
        await proxy.cut()


async def _is(value, expected) -> bool:
    return await value == expected


async def _count(value, n: int) -> bool:
    return len(await value) >= n


async def _logged(path: Path, text: str) -> bool:
    return text in await asyncio.to_thread(path.read_text, errors="replace")
