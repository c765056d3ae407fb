"""`docker compose up` for real: the whole compose.yaml in containers of a Docker engine of the
test's own, chatted with through the HAProxy container, one gateway container killed.

No image registry is reachable here, so the images are built locally (tests/deploy/
compose_images.py): a Debian bookworm base by debootstrap, stand-ins for the official redis,
postgres, haproxy and python images from Debian's packages, and roomstream:latest from the repo's
Dockerfile on the python stand-in. compose.yaml is brought up unchanged plus an override
(tests/deploy/compose_override.py) that swaps those images in and puts every container on the host
network with ports of its own on 127.0.0.1. Then: every health check passes, the bootstrap job
creates `general`, two users chat through the balancer, one on each gateway container; gateway-1
is `docker kill`ed mid-chat; its user resumes through the balancer on gateway-2 and both see every
message exactly once in seq order. Containers, volumes and dockerd are removed even on failure.

Skipped only when `dockerd` cannot start on the machine. Times of each step go to
<cache>/times.log (docs/operations.md, "compose test").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from roomstream_kit.auth import issue_token

from tests.deploy import compose_images
from tests.deploy.compose_override import default_services, haproxy_config, listen_port, override
from tests.deploy.docker_engine import DockerEngine, EngineUnavailable
from tests.deploy.lb import HAPROXY_CFG
from tests.deploy.traffic import Chatter, check_exactly_once, wait_for
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
RESERVED = {5432, 6379, *range(8000, 8401)}  # shared servers, the dev runner
MESSAGES_EACH = 12
UP_TIMEOUT_S = 240.0

pytestmark = pytest.mark.timeout(1500)  # a fresh machine builds everything (docs/operations.md)


def pick_ports(names: list[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_port()
        if port not in RESERVED and port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


@dataclass
class Stack:
    """One compose project on the test's engine."""

    engine: DockerEngine
    files: list[Path]
    project: str
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        binary = shutil.which("docker-compose")
        assert binary, "docker-compose is not installed (scripts/ensure-services.sh installs it)"
        files = [a for f in self.files for a in ("-f", str(f))]
        return subprocess.run(
            [binary, "--ansi", "never", "-p", self.project, *files, *args],
            env={**self.engine.env, **self.env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def containers(self) -> dict[str, dict[str, Any]]:
        """compose service → `docker inspect` of its container."""
        ids = self.engine.run(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"
        ).stdout.split()
        if not ids:
            return {}
        found = json.loads(self.engine.run("inspect", *ids).stdout)
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in found}

    def states(self) -> dict[str, str]:
        """service → `healthy` / `starting` / `exited(0)`... (health when it has a check)."""
        out = {}
        for name, c in self.containers().items():
            state = c["State"]
            health = state.get("Health")
            if state["Status"] == "running" and health:
                out[name] = health["Status"]
            elif state["Status"] == "exited":
                out[name] = f"exited({state['ExitCode']})"
            else:
                out[name] = state["Status"]
        return out

    def logs(self) -> str:
        done = self.compose("logs", "--no-color", "--tail", "150", timeout=60)
        return done.stdout + done.stderr


@contextlib.contextmanager
def engine_for(work: Path) -> Iterator[DockerEngine]:
    with compose_images.data_root(work) as data_root:
        engine = DockerEngine(data_root, work / "dockerd.log")
        try:
            engine.start()
        except EngineUnavailable as exc:
            pytest.skip(f"dockerd cannot start on this machine, compose test skipped: {exc}")
        try:
            engine.remove_all_containers()
            yield engine
        finally:
            engine.stop()


def record_times(times: dict[str, float]) -> None:
    line = " ".join(f"{k.replace(' ', '_')}={v:.1f}s" for k, v in times.items())
    with open(compose_images.cache_dir() / "times.log", "a") as log:
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")
    print(f"compose test times: {line}")


def nofile_hard_limit() -> int:
    """The open-file hard limit the engine (a child of this process) can give containers."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def compose_config(files: list[Path], env: dict[str, str]) -> dict[str, Any]:
    """`docker-compose config` of `files`: anchors merged, variables interpolated with `env`."""
    args = [a for f in files for a in ("-f", str(f))]
    done = subprocess.run(
        ["docker-compose", *args, "config"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


@dataclass
class Prepared:
    compose_file: Path
    """compose.yaml + the override, resolved, `ports:` dropped: what `up` runs."""
    ports: dict[str, int]
    secret: str
    env: dict[str, str]
    """The environment `docker-compose` interpolates compose.yaml with."""


def prepare(work: Path) -> Prepared:
    """The override file, the balancer's config and the environment of one compose project.

    compose.yaml + the override are resolved by `docker-compose config` and brought up with their
    `ports:` dropped: published ports mean nothing on the host network, Debian's docker-compose
    1.29 refuses them there, and a compose v1 override cannot delete a list.
    """
    secret = secrets.token_urlsafe(48)  # >= 32 bytes; never the development secret
    env = {
        "ROOMSTREAM_JWT_SECRET": secret,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "ROOMSTREAM_DEV_LOGIN": "0",
    }
    production = compose_config([COMPOSE], env)
    services = default_services(production)
    ports = pick_ports([n for n, s in services.items() if listen_port(n, s) is not None])
    cfg = work / "haproxy.cfg"
    cfg.write_text(haproxy_config(HAPROXY_CFG.read_text(), ports))
    images = {n: compose_images.STAND_INS[n] for n in ("redis", "postgres", "haproxy")}
    override_file = work / "compose.test.yaml"
    override_file.write_text(
        yaml.safe_dump(
            override(production, ports, images, secret, str(cfg), nofile_hard_limit()),
            sort_keys=False,
        )
    )
    merged = compose_config([COMPOSE, override_file], env)
    # Only what `up` starts without --profile (a profiled service would make a default network).
    merged["services"] = default_services(merged)
    used = {
        str(v["source"] if isinstance(v, dict) else v.split(":", 1)[0])
        for svc in merged["services"].values()
        for v in svc.get("volumes", [])
    }
    merged["volumes"] = {k: v for k, v in (merged.get("volumes") or {}).items() if k in used}
    for svc in merged["services"].values():
        svc.pop("ports", None)
    resolved = work / "compose.resolved.yaml"
    resolved.write_text(yaml.safe_dump(merged, sort_keys=False))
    return Prepared(resolved, ports, secret, env)


def tear_down(stack: Stack, work: Path) -> None:
    (work / "compose-logs.txt").write_text(stack.logs())
    down = stack.compose("down", "-v", "--remove-orphans", "-t", "10", timeout=180)
    assert down.returncode == 0, down.stderr


async def test_compose_up_chat_through_haproxy_and_kill_a_gateway(tmp_path: Path) -> None:
    times: dict[str, float] = {}
    with engine_for(tmp_path) as engine:
        times |= await asyncio.to_thread(compose_images.build_all, engine, tmp_path)
        prepared = await asyncio.to_thread(prepare, tmp_path)
        project = f"rstest{uuid.uuid4().hex[:8]}"
        stack = Stack(engine, [prepared.compose_file], project, prepared.env)
        ports, secret = prepared.ports, prepared.secret
        try:
            await run_stack(stack, ports, secret, times)
        finally:
            record_times(times)
            await asyncio.to_thread(tear_down, stack, tmp_path)


async def run_stack(
    stack: Stack, ports: dict[str, int], secret: str, times: dict[str, float]
) -> None:
    t = time.monotonic()
    up = await asyncio.to_thread(stack.compose, "up", "-d", "--no-build", timeout=UP_TIMEOUT_S)
    assert up.returncode == 0, f"compose up failed: {up.stderr}\n{stack.logs()}"
    expected = set(default_services(yaml.safe_load(stack.compose("config").stdout)))

    def all_up() -> bool:
        states = stack.states()
        bad = {
            n: s
            for n, s in states.items()
            if s == "unhealthy" or (s.startswith("exited(") and s != "exited(0)")
        }
        assert not bad, f"containers failed: {bad}\n{stack.logs()}"
        return set(states) == expected and all(
            s in ("healthy", "exited(0)") for s in states.values()
        )

    await wait_for(all_up, "every health check of the stack", deadline_s=UP_TIMEOUT_S)
    times["up until every health check passes"] = time.monotonic() - t
    states = stack.states()
    assert states.pop("bootstrap") == "exited(0)"  # the one-shot job created `general`
    assert set(states.values()) == {"healthy"}, states
    for name, c in stack.containers().items():
        assert c["HostConfig"]["NetworkMode"] == "host", name
    networks = stack.engine.run("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert set(networks) <= {"bridge", "host", "none"}, networks  # no network of the project
    assert "room 'general' created" in stack.compose("logs", "--no-color", "bootstrap").stdout

    await chat_and_kill(stack, ports, secret)


async def chat_and_kill(stack: Stack, ports: dict[str, int], secret: str) -> None:
    url = f"ws://127.0.0.1:{ports['lb']}/ws"

    def token_for(user: str) -> str:
        return issue_token(secret, user, ttl_s=3600)

    # Round-robin through the balancer: connect until one user is on each gateway container.
    # Compose reports a gateway healthy before HAProxy has seen it answer `rise 2` checks (2 s
    # apart) when the balancer started first, so keep trying for a bounded time.
    chatters: dict[str, Chatter] = {}
    deadline = asyncio.get_running_loop().time() + 60
    i = 0
    while len(chatters) < 2 and asyncio.get_running_loop().time() < deadline:
        c = await Chatter(f"user{i}", [url], "general", token_for=token_for).start()
        i += 1
        if c.node in chatters:
            await c.close()
            await asyncio.sleep(0.5)
        else:
            chatters[c.node] = c
    assert set(chatters) == {"gateway-1", "gateway-2"}, set(chatters)
    pair = list(chatters.values())
    try:
        senders = [asyncio.create_task(c.send_many(MESSAGES_EACH, pause_s=0.1)) for c in pair]
        await wait_for(lambda: all(len(c.acked) >= MESSAGES_EACH // 3 for c in pair), "first sends")
        victim = chatters["gateway-1"]
        await asyncio.to_thread(stack.engine.run, "kill", stack.containers()["gateway-1"]["Id"])
        await asyncio.wait_for(asyncio.gather(*senders), timeout=120)
        killed = stack.containers()["gateway-1"]["State"]
        assert (killed["Status"], killed["ExitCode"]) == ("exited", 137), killed  # stays down
        assert victim.node == "gateway-2", victim.nodes  # resumed through the balancer
        last = max(seq for c in pair for seq in c.acked.values())
        await wait_for(lambda: all(c.last_seq() >= last for c in pair), "both caught up")
        check_exactly_once(pair)
    finally:
        for c in pair:
            await c.close()
