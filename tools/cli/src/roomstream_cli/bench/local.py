"""What the service benchmarks share: a free local port, waiting for an HTTP endpoint, removing
a scratch namespace and database."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from typing import Any

import asyncpg
import httpx
from roomstream_kit.redis import AnyRedis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(
    url: str, deadline_s: float = 60.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Until `GET url` answers 200; `TimeoutError` after `deadline_s`, `RuntimeError` at once
    when `proc` (the process that should answer) exited."""
    end = time.monotonic() + deadline_s
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() < end:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def remove_scratch(redis: AnyRedis, namespace: str, admin_url: str, database: str) -> None:
    """Delete every key of `namespace` and drop `database` (through `admin_url`)."""
    async for key in redis.scan_iter(match=f"{namespace}:*", count=1000):
        await redis.delete(key)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()
