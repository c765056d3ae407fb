"""`roomstream up` with real processes: comes up, chats across its two gateways, stops cleanly on
SIGTERM with no child left; a taken port fails at once, naming the port, with nothing started."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from roomstream_cli.up.plan import Ports, port_taken
from roomstream_client import Client
from roomstream_contracts.tokens import DEV_JWT_SECRET
from roomstream_kit.auth import issue_token

from tests.conftest import REDIS_URL
from tests.support.processes import free_port

UP_DEADLINE_S = 180.0


def make_token(user: str) -> str:
    """A token of the development runner: it runs with the development secret (dev mode)."""
    return issue_token(DEV_JWT_SECRET, user, ttl_s=3600)


def free_base(gateways: int = 2) -> int:
    """A port base whose gateway, rooms, history, monitor and hooks ports are all free."""
    for _ in range(200):
        base = random.randrange(20000, 29000)
        p = Ports.from_base(base, gateways)
        if not any(
            port_taken("127.0.0.1", x)
            for x in [*p.gateways, p.rooms, p.history, p.monitor, p.hooks]
        ):
            return base
    raise RuntimeError("no free port base")


def children_of(pid: int) -> list[int]:
    """Every descendant pid of `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def processes_of(namespace: str) -> list[int]:
    """Processes whose environment names this test's namespace (the runner's children)."""
    marker = f"ROOMSTREAM_NAMESPACE={namespace}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0") and alive(
                    int(entry.name)
                ):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Runner:
    """`roomstream up` as a child process, its output collected by a thread."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "roomstream_cli", "up", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(self, text: str, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited with {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > end:
                raise AssertionError(f"no {text!r} after {deadline_s}s:\n{self.output}")
            await asyncio.sleep(0.2)


def up_env(namespace: str) -> dict[str, str]:
    drop = ("DATABASE_URL", "REDIS_URL", "ROOMSTREAM_JWT_SECRET", "ROOMSTREAM_DEV_MODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"REDIS_URL": REDIS_URL, "ROOMSTREAM_NAMESPACE": namespace})
    return env


async def test_up_runs_the_system_chats_across_gateways_and_stops_on_sigterm(
    tmp_path: Path, namespace: str, database_url: str
) -> None:
    base = free_base()
    runner = Runner(
        "--port-base", str(base), "--data-dir", str(tmp_path / "data"),
        "--database-url", database_url, env=up_env(namespace),
    )  # fmt: skip
    try:
        await runner.wait_for_line("roomstream is up", UP_DEADLINE_S)
        out = runner.output
        assert f"http://127.0.0.1:{base}/" in out and f"http://127.0.0.1:{base + 1}/" in out
        assert "room      general" in out
        assert (tmp_path / "data" / "logs" / "gateway-1.log").exists()
        children = children_of(runner.proc.pid)
        assert len(children) >= 6, children  # two gateways, rooms, history, monitor, hooks

        # A person on each gateway chats in `general`.
        url_a, url_b = f"ws://127.0.0.1:{base}/ws", f"ws://127.0.0.1:{base + 1}/ws"
        async with Client(url_a, make_token("ada")) as ada, Client(url_b, make_token("bo")) as bo:
            await ada.join("general")
            await bo.join("general")
            ack = await ada.send("general", "hello from gateway 1")
            async for event in bo.events():
                if event.type == "event" and event.kind == "message":
                    assert event.data["text"] == "hello from gateway 1"
                    assert event.seq == ack.seq
                    break
            reply = await bo.send("general", "hello from gateway 2")
            async for event in ada.events():
                if event.type == "event" and event.kind == "message" and event.seq == reply.seq:
                    break

        runner.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(runner.proc.wait, 60) == 0, runner.output
        # `up` waits for its children before it exits: none may be left at this point.
        assert not [pid for pid in children if alive(pid)], "children left running"
        assert processes_of(namespace) == []
        assert not port_taken("127.0.0.1", base), "gateway port still in use"
    finally:
        if runner.proc.poll() is None:
            runner.proc.kill()
        for pid in children_of(runner.proc.pid):
            os.kill(pid, signal.SIGKILL)


async def test_up_with_a_taken_port_exits_non_zero_naming_it_and_starts_nothing(
    tmp_path: Path, namespace: str
) -> None:
    base = free_base()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", base + 100))  # the rooms port
        blocker.listen()
        runner = Runner(
            "--port-base", str(base), "--data-dir", str(tmp_path / "data"), env=up_env(namespace)
        )
        code = await asyncio.to_thread(runner.proc.wait, 60)
        runner.thread.join(5)
    assert code != 0
    assert f"port {base + 100} is taken" in runner.output
    assert "rooms" in runner.output
    assert processes_of(namespace) == []
    for port in (base, base + 1, base + 200, base + 300):
        assert not port_taken("127.0.0.1", port)


async def test_up_embedded_starts_and_stops_its_own_redis_and_postgres(namespace: str) -> None:
    base = free_base()
    redis_port, pg_port = free_port(), free_port()
    # PostgreSQL runs as the `postgres` user when we are root: its folder must be reachable.
    data = Path(tempfile.mkdtemp(prefix="rs-up-", dir="/tmp"))
    os.chmod(data, 0o755)
    runner = Runner(
        "--embedded", "--port-base", str(base), "--data-dir", str(data),
        "--redis-port", str(redis_port), "--postgres-port", str(pg_port),
        env={**up_env(namespace), "REDIS_URL": ""},
    )  # fmt: skip
    try:
        await runner.wait_for_line("roomstream is up", UP_DEADLINE_S)
        assert f"redis://127.0.0.1:{redis_port}/0 (embedded)" in runner.output
        assert f"127.0.0.1:{pg_port}/roomstream (embedded)" in runner.output
        assert (data / "postgres" / "PG_VERSION").exists()
        async with Client(f"ws://127.0.0.1:{base + 1}/ws", make_token("eve")) as eve:
            await eve.join("general")
            ack = await eve.send("general", "on embedded servers")
            assert ack.seq is not None and ack.seq >= 2
        runner.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(runner.proc.wait, 90) == 0, runner.output
        assert processes_of(namespace) == []
        for port in (redis_port, pg_port, base, base + 100):
            assert not port_taken("127.0.0.1", port), f"port {port} still in use"
    finally:
        if runner.proc.poll() is None:
            runner.proc.kill()
        for pid in processes_of(namespace):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(data, ignore_errors=True)
