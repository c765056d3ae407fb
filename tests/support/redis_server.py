"""A redis-server of a test's own (free port, its own directory), for faults that must never touch
the shared server: restarts, slow AOF loading, busy scripts."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.processes import free_port


def require_redis_server() -> None:
    """Skip (or, on CI, fail) when redis-server is not installed."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (CI must run this test)")
        pytest.skip("redis-server is not installed")


class OwnRedis:
    """redis-server with an append-only file in `directory` (its data survives a restart).

    `extra` are more `--option value` arguments, e.g. `["--key-load-delay", "50"]`.
    """

    def __init__(self, directory: Path, extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.dir = directory
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=timeout, socket_timeout=timeout)

    def start(self, *, wait_loaded: bool = True, timeout: float = 30.0) -> None:
        """Start; wait until it accepts connections (and, with `wait_loaded`, has loaded)."""
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.dir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state == "ready" or (state == "loading" and not wait_loaded):
                return
            time.sleep(0.05)
        raise TimeoutError(f"own redis-server not {'loaded' if wait_loaded else 'up'}")

    def state(self) -> str:
        """ "down" (no connection), "loading" (answers LOADING) or "ready".

        A raw PING over a socket of its own: redis-py would retry LOADING (a ConnectionError)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                reply = sock.recv(256)
        except OSError:
            return "down"
        if reply.startswith(b"-LOADING"):
            return "loading"
        return "ready" if reply.startswith(b"+PONG") else "down"

    def stop(self) -> None:
        """SHUTDOWN (the AOF is flushed), then wait for the process (woken first if a test left
        it SIGSTOPped)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()  # SIGTERM: redis-server shuts down cleanly, AOF fsynced
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def fill(self, keys: int) -> None:
        """`keys` filler keys, then an AOF rewrite (an RDB preamble that loads key by key)."""
        c = self.client(30)
        c.eval(
            "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'filler:' .. i, 'x') end",
            0,
            keys,
        )
        c.bgrewriteaof()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = c.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                return
            time.sleep(0.05)
        raise TimeoutError("AOF rewrite did not finish")
