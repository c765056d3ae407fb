"""`roomstream bench hooks`: benchmark of the webhooks service (not a test).

Events/s delivered by one hooks process (a real `roomstream-hooks` subprocess) to one local
receiver (another process, counting the events of each batch it verifies): N messages are
appended to the log first, then the hooks process starts on that backlog, and the time from its
`/healthz` answering until the receiver holds all N is measured (catch-up throughput: the
consumer, the outbox and the delivery at once). Uses the local Redis and Postgres (`REDIS_URL`, `DATABASE_URL`), a
random namespace and a scratch database, both removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog, RoomCheck
from roomstream_kit.rooms import seed_room
from roomstream_kit.signing import new_secret

from .local import free_port, remove_scratch, wait_http

RECEIVER = """
import sys, uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
import json
secret, port = sys.argv[1], int(sys.argv[2])
seen = set()
async def hook(request):
    body = await request.body()
    Webhook(secret).verify(body, dict(request.headers), json_parse=False)
    seen.update(e["id"] for e in json.loads(body)["events"])
    return Response(status_code=204)
async def count(request):
    return JSONResponse({"count": len(seen)})
app = Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/count", count)])
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


async def bench(events: int, rooms: int, batch_max: int) -> None:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    ns = f"bench{uuid.uuid4().hex[:8]}"
    db = f"rs_bench_{uuid.uuid4().hex[:8]}"
    database_url = urlunsplit(urlsplit(admin)._replace(path=f"/{db}"))
    secret = new_secret()
    rport, hport = free_port(), free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, secret, str(rport)])  # noqa: ASYNC220
    endpoints = [{"id": "bench", "url": f"http://127.0.0.1:{rport}/hook", "secret": secret,
                  "kinds": ["message"]}]  # fmt: skip
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "ROOMSTREAM_NAMESPACE": ns,
        "ROOMSTREAM_PORT": str(hport),
        "ROOMSTREAM_DEV_MODE": "1",
        "ROOMSTREAM_LOG_LEVEL": "WARNING",
        "ROOMSTREAM_HOOKS_ENDPOINTS": json.dumps(endpoints),
        "ROOMSTREAM_DELIVERY_BATCH_MAX": str(batch_max),
        "ROOMSTREAM_IDLE_POLL_S": "0.05",
    }
    hooks: subprocess.Popen[bytes] | None = None
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await wait_http(f"http://127.0.0.1:{rport}/count", proc=receiver)
        keys = StreamKeys(namespace=ns)
        log = EventLog(redis, keys)
        names = [f"room-{i}" for i in range(rooms)]
        for room in names:
            await seed_room(redis, keys, room, "b")
        t_append = time.perf_counter()

        async def append(i: int) -> None:
            msg = Envelope(id=new_event_id(), kind=EventKind.MESSAGE, room=names[i % rooms],
                           user="b", ts=now_ms(), data={"text": f"m{i}", "client_id": str(i)})  # fmt: skip
            await log.append(msg, room_check=RoomCheck.EXISTS)

        for start in range(0, events, 50):
            await asyncio.gather(*(append(i) for i in range(start, min(events, start + 50))))
        appended = time.perf_counter() - t_append
        # The hooks process starts on a full log (its group reads from the beginning).
        hooks = subprocess.Popen([sys.executable, "-m", "roomstream_hooks"], env=env)  # noqa: ASYNC220
        await wait_http(f"http://127.0.0.1:{hport}/healthz", proc=hooks)
        t0 = time.perf_counter()
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                count = (await client.get(f"http://127.0.0.1:{rport}/count")).json()["count"]
                if count >= events:
                    break
                await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t0
        print(
            f"{events} events in the log ({rooms} rooms, appended in {appended:.1f}s); one hooks "
            f"process, batches of <= {batch_max}: all delivered {elapsed:.2f}s after it answered "
            f"/healthz = {events / elapsed:,.0f} events/s"
        )
    finally:
        for proc in (hooks, receiver):
            if proc is None:
                continue
            proc.terminate()
            proc.wait(20)
        try:
            await remove_scratch(redis, ns, admin, db)
        finally:
            await redis.aclose()


def run(args: argparse.Namespace) -> int:
    asyncio.run(bench(args.events, args.rooms, args.batch_max))
    return 0
