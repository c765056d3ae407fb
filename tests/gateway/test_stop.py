"""A stop never waits on the delivery tail's blocking read (issue 9 item 8): SIGTERM exits 0
within 5 s while the tail is busy reading a flowing log, and while its Redis does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_kit.eventlog import EventLog

from tests.gateway.helpers import client, close_code, create_room, keys, recv
from tests.support.processes import free_port

GATEWAY = "roomstream_gateway"
STOP_WITHIN_S = 5.0


def _timed_terminate(proc) -> tuple[int, float]:
    start = time.monotonic()
    code = proc.terminate(timeout=30)
    return code, time.monotonic() - start


async def test_sigterm_while_the_tail_reads_a_flowing_log_exits_0_quickly(
    cluster, namespace, redis_client
):
    """Replies arrive every few ms: a cancel that lands as a reply does was swallowed by
    `wait_for` on Python 3.11 and the stop hung until its 30 s deadline (exit 1)."""
    await create_room(redis_client, namespace, "main", "alice")
    k = keys(namespace)
    log = EventLog(redis_client, k)
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            env = Envelope(
                id=new_event_id(), kind=EventKind.TYPING, room="main", user="w", ts=now_ms()
            )
            await log.append(env)

    writers = [asyncio.create_task(writer()) for _ in range(4)]
    try:
        for _ in range(4):
            gw = cluster.start(GATEWAY, env={"ROOMSTREAM_TAIL_COUNT": "5"})
            alice, _ = await client(gw.ws_url, "alice")
            for _ in range(5):  # the tail is delivering
                assert (await recv(alice))["type"] == "typing"
            # The socket keeps reading, as a live client does, so its close handshake completes.
            drain = asyncio.create_task(close_code(alice))
            code, took = await asyncio.to_thread(_timed_terminate, gw)
            assert code == 0, gw.tail()
            assert took < STOP_WITHIN_S, (took, gw.tail())
            assert await drain == 1012
    finally:
        stop.set()
        await asyncio.gather(*writers, return_exceptions=True)


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("redis-server did not start")


async def test_sigterm_while_redis_does_not_answer_exits_0_quickly(cluster, tmp_path: Path):
    """The tail is blocked in XREAD on a Redis that is SIGSTOPped; the stop still ends in time
    (the node record cannot be removed: the monitor's timeout takes care of it)."""
    port = free_port()
    redis_proc = _start_redis(port)
    try:
        gw = cluster.start(
            GATEWAY,
            env={"REDIS_URL": f"redis://127.0.0.1:{port}/0", "ROOMSTREAM_TAIL_BLOCK_MS": "60000"},
        )
        own = aioredis.Redis(port=port)
        try:
            assert await own.ping()
        finally:
            await own.aclose()
        await asyncio.sleep(0.5)  # the tail is in its (long) XREAD
        redis_proc.send_signal(signal.SIGSTOP)
        code, took = await asyncio.to_thread(_timed_terminate, gw)
        assert code == 0, gw.tail()
        assert took < STOP_WITHIN_S, (took, gw.tail())
    finally:
        redis_proc.send_signal(signal.SIGCONT)
        redis_proc.kill()
        redis_proc.wait(10)
