"""Helpers of the rooms tests: the service process, API calls, log appends as a gateway or the
monitor would make them, and snapshots of both projections for comparisons."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog
from roomstream_rooms import store
from roomstream_rooms.readmodels import ReadModels

from tests.conftest import PG_ADMIN_URL, REDIS_URL, make_token, service_token

ROOMS = "roomstream_rooms"
DEADLINE_S = 60.0
FAST_ENV = {
    "ROOMSTREAM_RECLAIM_IDLE_MS": "1500",
    "ROOMSTREAM_LAG_INTERVAL_S": "0.5",
    # Every transition appended at once: these tests count them (tests/rooms/test_presence_grace.py
    # covers the grace).
    "ROOMSTREAM_PRESENCE_GRACE_S": "0",
}


def keys(namespace: str) -> StreamKeys:
    return StreamKeys(namespace=namespace)


def auth(user: str | None = None, *, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or (make_token(user) if user else service_token())}"}


@asynccontextmanager
async def api(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        yield http


async def poll(
    check: Callable[[], Awaitable[bool]], deadline_s: float = DEADLINE_S, interval: float = 0.1
) -> None:
    """Wait until `check()` holds (generous deadline: the machine is shared)."""
    deadline = time.monotonic() + deadline_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(interval)


async def append(redis: aioredis.Redis, namespace: str, env: Envelope) -> int | None:
    result = await EventLog(redis, keys(namespace)).append(env)
    assert result.ok, result
    return result.seq


def conn_event(kind: EventKind, user: str, node: str, conn: str, **data: Any) -> Envelope:
    """`connected` / `disconnected` as a gateway appends them."""
    return Envelope(
        id=new_event_id(), kind=kind, user=user, node=node, conn=conn, ts=now_ms(), data=data
    )


def node_failed(node: str) -> Envelope:
    """`node_failed` as the monitor appends it."""
    return Envelope(
        id=new_event_id(),
        kind=EventKind.NODE_FAILED,
        node=node,
        ts=now_ms(),
        data={"node": node, "last_seen_ms": now_ms() - 5000},
    )


def member_event(kind: EventKind, room: str, user: str, by: str) -> Envelope:
    return Envelope(
        id=new_event_id(), kind=kind, room=room, user=user, ts=now_ms(), data={"by": by}
    )


def message(room: str, user: str, text: str) -> Envelope:
    return Envelope(
        id=new_event_id(),
        kind=EventKind.MESSAGE,
        room=room,
        user=user,
        ts=now_ms(),
        data={"text": text, "client_id": uuid.uuid4().hex},
    )


async def log_envelopes(redis: aioredis.Redis, namespace: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key in keys(namespace).all_logs():
        for _, fields in await redis.xrange(key):
            out.append(orjson.loads(fields[b"e"]))
    return out


async def log_length(redis: aioredis.Redis, namespace: str) -> int:
    return sum([await redis.xlen(k) for k in keys(namespace).all_logs()])


async def redis_snapshot(redis: aioredis.Redis, namespace: str) -> dict[str, Any]:
    """Every read-model key of the namespace with its content, the prefix cut off."""
    out: dict[str, Any] = {}
    for pattern in ReadModels(redis, keys(namespace)).patterns():
        async for raw in redis.scan_iter(match=pattern, count=1000):
            key = raw.decode()
            kind = (await redis.type(key)).decode()
            if kind == "hash":
                value: Any = {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}
            elif kind == "set":
                value = sorted(m.decode() for m in await redis.smembers(key))
            else:
                value = kind
            out[key[len(namespace) :]] = value
    return dict(sorted(out.items()))


async def pg_snapshot(database_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        return await store.snapshot(conn)
    finally:
        await conn.close()


async def snapshot(redis: aioredis.Redis, namespace: str, database_url: str) -> dict[str, Any]:
    """Both projections, comparable across namespaces and databases."""
    return {
        "postgres": await pg_snapshot(database_url),
        "redis": await redis_snapshot(redis, namespace),
    }


async def delete_read_models(redis: aioredis.Redis, namespace: str) -> int:
    return await ReadModels(redis, keys(namespace)).delete_all()


async def copy_log(redis: aioredis.Redis, src: str, dst: str) -> None:
    """Copy the log of namespace `src` (shards, seq counters, recent buffers) to `dst`, without
    consumer groups: a service on `dst` sees the same events as if it had never run."""
    for pattern in (f"{src}:log:*", f"{src}:seq:*", f"{src}:recent:*"):
        async for raw in redis.scan_iter(match=pattern, count=1000):
            key = raw.decode()
            target = dst + key[len(src) :]
            await redis.copy(key, target, replace=True)
            if key.startswith(f"{src}:log:"):
                for group in await redis.xinfo_groups(target):
                    await redis.xgroup_destroy(target, group["name"])


@asynccontextmanager
async def extra_deployment() -> AsyncIterator[tuple[str, str]]:
    """A second namespace and database (the reference run), cleaned up afterwards."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    name = f"rs_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield ns, f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            async for key in client.scan_iter(match=f"{ns}:*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def applied_total(database_url: str) -> int:
    """Sum of every room's last applied seq (progress of the projection)."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT COALESCE(sum(last_seq), 0) FROM rooms") or 0)
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def group_pending(redis: aioredis.Redis, namespace: str, group: str = "rooms") -> int:
    total = 0
    for key in keys(namespace).all_logs():
        try:
            for info in await redis.xinfo_groups(key):
                if info["name"].decode() == group:
                    total += int(info["pending"])
        except aioredis.ResponseError:
            pass
    return total
