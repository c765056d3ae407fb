"""Per-user events and unread counts: a quick probe that prints figures (not a test; not
collected by pytest). Starts its own rooms service and gateway on the local Redis / Postgres
(a namespace and database of its own, removed afterwards):

    uv run --frozen --no-sync python -m tests.userevents.probe

Prints the latency of `POST /users/{user}/events` (300 sequential calls), publish → `user` frame
on a socket, and the connect → welcome time of a user with 20 rooms without read markers and
with a marker 150 messages behind in each (the welcome counts `unread`).
"""

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog

from tests.conftest import JWT_SECRET, PG_ADMIN_URL, REDIS_URL, service_token
from tests.gateway.helpers import client, recv, request
from tests.support.processes import ServiceProcess, free_port


async def main() -> None:
    ns = f"b{uuid.uuid4().hex[:8]}"
    db = f"rs_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{db}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    env = {
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": f"{base}/{db}",
        "ROOMSTREAM_NAMESPACE": ns,
        "ROOMSTREAM_JWT_SECRET": JWT_SECRET,
        "ROOMSTREAM_LOG_LEVEL": "WARNING",
    }
    logs = Path(tempfile.mkdtemp())
    rooms = ServiceProcess("roomstream_rooms", env, free_port(), logs).start()
    gw = ServiceProcess(
        "roomstream_gateway",
        {**env, "ROOMSTREAM_ROOMS_URL": rooms.url, "ROOMSTREAM_NODE_ID": "gw-bench"},
        free_port(),
        logs,
    ).start()
    try:
        async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
            h = {"Authorization": f"Bearer {service_token()}"}
            ws, _ = await client(gw.ws_url, "u0")
            lat, e2e = [], []
            t_all = time.perf_counter()
            for i in range(300):
                t0 = time.perf_counter()
                r = await http.post(
                    "/users/u0/events",
                    json={"kind": "notice", "data": {"i": i}, "id": f"x{i}"},
                    headers=h,
                )
                t1 = time.perf_counter()
                assert r.status_code == 201
                while (await recv(ws))["type"] != "user":
                    pass
                t2 = time.perf_counter()
                lat.append((t1 - t0) * 1000)
                e2e.append((t2 - t0) * 1000)
            total = time.perf_counter() - t_all
            print(
                f"POST /users/u0/events: median {statistics.median(lat):.2f} ms, p95 {sorted(lat)[284]:.2f} ms; "
                f"publish->user frame median {statistics.median(e2e):.2f} ms; 300 sequential in {total:.2f} s"
            )
            # welcome with 20 rooms: no markers vs markers 150 messages behind
            for r_i in range(20):
                r = await http.post(
                    "/rooms",
                    json={
                        "id": f"r{r_i}",
                        "name": "r",
                        "kind": "public",
                        "members": ["u1", "u2"],
                        "owner": "u2",
                    },
                    headers=h,
                )
                assert r.status_code == 201, r.text
        rc = aioredis.Redis.from_url(REDIS_URL)
        log = EventLog(rc, StreamKeys(namespace=ns))
        for r_i in range(20):
            for m in range(150):
                data = {"text": "x", "client_id": f"{r_i}-{m}"}
                env = Envelope(
                    id=new_event_id(),
                    kind=EventKind.MESSAGE,
                    room=f"r{r_i}",
                    user="u2",
                    ts=now_ms(),
                    data=data,
                )
                await log.append(env)
        await rc.aclose()

        async def welcomes(n: int) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                w, _ = await client(gw.ws_url, "u1")
                out.append((time.perf_counter() - t0) * 1000)
                await w.close()
            return out

        plain = await welcomes(30)
        reader, welcome = await client(gw.ws_url, "u1")
        for r_i in range(20):
            ack = await request(reader, {"type": "read", "room": f"r{r_i}", "seq": 1})
            assert ack["type"] == "ack", ack
        await asyncio.sleep(1)
        marked = await welcomes(30)
        _, welcome = await client(gw.ws_url, "u1")
        print(
            f"welcome of 20 rooms: no markers median {statistics.median(plain):.2f} ms; "
            f"20 markers 150 messages behind (unread {welcome['rooms']['r0'].get('unread')}) median {statistics.median(marked):.2f} ms "
            f"(ratio {statistics.median(marked) / statistics.median(plain):.2f})"
        )
    finally:
        gw.stop()
        gw.kill()
        rooms.stop()
        rooms.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        rc = aioredis.Redis.from_url(REDIS_URL)
        async for k in rc.scan_iter(match=f"{ns}:*", count=1000):
            await rc.delete(k)
        await rc.aclose()


if __name__ == "__main__":
    asyncio.run(main())
