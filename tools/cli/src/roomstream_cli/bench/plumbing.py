"""What the bench commands share: their Redis / output options, the stderr log, the event loop,
and the JSON-lines pipe between an orchestrator and its load-generator processes.

Kept free of heavy imports: the worker processes (`worker`, `connworker`) import it too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import orjson

from ..common import DEFAULT_REDIS_URL, env_namespace, env_redis_url, env_rooms_url

T = TypeVar("T")


def add_redis_args(
    p: argparse.ArgumentParser, *, rooms_url: bool = False, namespace: bool = True
) -> None:
    """`--rooms-url` (when asked), `--redis-url` and `--namespace`, defaults from the env."""
    if rooms_url:
        p.add_argument("--rooms-url", default=env_rooms_url() or "")
    p.add_argument("--redis-url", default=env_redis_url() or DEFAULT_REDIS_URL)
    if namespace:
        p.add_argument("--namespace", default=env_namespace())


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def split_urls(urls: str) -> list[str]:
    """The non-empty entries of a comma-separated `--urls`."""
    return [u.strip() for u in urls.split(",") if u.strip()]


def log(line: str, prefix: str = "bench") -> None:
    print(f"{prefix}: {line}", file=sys.stderr, flush=True)


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop where installed (less loop overhead in the figures), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


async def start_worker(
    module: str, config: dict[str, Any], limit: int | None = None
) -> asyncio.subprocess.Process:
    """`python -m module` with pipes on stdin/stdout, `config` sent as its first line."""
    extra: dict[str, Any] = {} if limit is None else {"limit": limit}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        **extra,
    )
    await send_line([proc], config)
    return proc


async def send_line(procs: Iterable[asyncio.subprocess.Process], doc: dict[str, Any]) -> None:
    """`doc` as one JSON line to each worker's stdin."""
    line = orjson.dumps(doc) + b"\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(line)
        await p.stdin.drain()


async def read_line(proc: asyncio.subprocess.Process, wait_s: float) -> dict[str, Any]:
    """The worker's next JSON line; `SystemExit` when it exited instead."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), wait_s)
    if not line:
        raise SystemExit(f"bench: a worker exited with {await proc.wait()}")
    doc: dict[str, Any] = orjson.loads(line)
    return doc


async def reap(procs: Iterable[asyncio.subprocess.Process]) -> None:
    """Kill the workers still running and wait for every one."""
    for p in procs:
        if p.returncode is None:
            p.kill()
        await p.wait()


def emit(doc: dict[str, Any]) -> None:
    """In a worker: `doc` as one JSON line to the orchestrator."""
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    sys.stdout.flush()


async def stdin_reader(limit: int = 2**16) -> asyncio.StreamReader:
    """In a worker: its stdin as a stream (lines of at most `limit` bytes), on the running loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader
