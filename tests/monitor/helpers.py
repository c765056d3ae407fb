"""Helpers of the monitor and observability tests: polling, the stats API, reading the log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson
import redis.asyncio as aioredis
from roomstream_contracts.streams import FIELD_EVENT, StreamKeys

from tests.conftest import service_token

T = TypeVar("T")


async def wait_for(
    check: Callable[[], Awaitable[T | None]], deadline_s: float = 60.0, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy (generous deadline: the machine is shared)."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def api(base_url: str, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or service_token()}"}
    async with httpx.AsyncClient(timeout=5.0) as client:
        return await client.get(base_url + path, headers=headers)


async def stats(base_url: str) -> dict[str, Any] | None:
    """`/api/stats`, or None while it is not available."""
    r = await api(base_url, "/api/stats")
    return r.json() if r.status_code == 200 else None


async def log_events(
    redis: aioredis.Redis, namespace: str, kind: str | None = None
) -> list[dict[str, Any]]:
    """Every envelope in the log (all shards) of `namespace`, optionally only one kind."""
    out = []
    for stream in StreamKeys(namespace=namespace).all_logs():
        for _, fields in await redis.xrange(stream):
            env = orjson.loads(fields[FIELD_EVENT])
            if kind is None or env["kind"] == kind:
                out.append(env)
    return out
