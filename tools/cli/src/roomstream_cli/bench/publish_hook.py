"""`roomstream bench publish-hook`: what the gateway's publish hook costs on send → ack.

Self-contained on the local Redis (`REDIS_URL`, a random namespace removed afterwards): starts a
hook endpoint (a uvicorn process that verifies every request's Standard Webhooks signature and
answers `allow`, or `replace` with `--action replace`) and two gateway processes, one without a
hook and one with it (`ROOMSTREAM_PUBLISH_HOOK_URL`), creates one public room, and connects
`--clients` sockets to each gateway. Then, in `--rounds` rounds that alternate which gateway goes
first (so both see the same machine), every client sends `--per-round` messages one after the
other (a closed loop: the next send after the previous ack) and each send → ack time is recorded.
Prints p50 / p99 / mean per gateway and the hook's share, and the CPU time per send of each
gateway process (and of the hook endpoint) over its rounds, from /proc — a figure that a loaded
machine skews less than latency (JSON with `--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from roomstream_kit.signing import new_secret
from websockets.asyncio.client import ClientConnection, connect

from ..common import jwt_secret, stream_keys, token
from ..rooms import create_room_direct
from . import procstat
from .local import free_port, wait_http
from .plumbing import add_json_arg, add_redis_args, log

ROOM = "hook-bench"

HOOK = """
import sys, uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
import json
secret, port, action = sys.argv[1], int(sys.argv[2]), sys.argv[3]
async def hook(request):
    body = await request.body()
    Webhook(secret).verify(body, dict(request.headers))
    if action == "replace":
        return JSONResponse({"action": "replace", "text": json.loads(body)["text"].upper()})
    return JSONResponse({"action": "allow"})
async def ok(request):
    return Response(status_code=200)
app = Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/ok", ok)])
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""
"""The hook endpoint: verifies the signature, answers the verdict."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "publish-hook",
        help="send → ack latency without and with a local publish hook",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clients", type=int, default=4, help="sockets per gateway (4)")
    p.add_argument("--rounds", type=int, default=10, help="alternating rounds (10)")
    p.add_argument("--per-round", type=int, default=50, help="sends per client per round (50)")
    p.add_argument("--action", choices=("allow", "replace"), default="allow")
    p.add_argument("--timeout-ms", type=int, default=1000, help="the hook's timeout (1000)")
    add_redis_args(p, namespace=False)
    add_json_arg(p)
    p.set_defaults(func=run)


@dataclass(slots=True)
class Figures:
    sends: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    gateway_cpu_us_per_send: float
    """utime + stime of the gateway process during its rounds ÷ its sends."""


@dataclass(slots=True)
class Result:
    clients_per_gateway: int
    sends_per_gateway: int
    action: str
    no_hook: Figures
    hook: Figures
    hook_p50_ms: float
    """p50 with the hook − p50 without: what asking a local hook adds to one send."""
    hook_p99_ms: float
    hook_endpoint_cpu_us_per_send: float
    """CPU of the hook endpoint process (verify the signature, answer) per send."""


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_bench(args))


def percentile(values: list[float], p: float) -> float:
    """The `p`-th percentile (nearest rank) of `values` (not empty)."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def figures(latencies: list[float], errors: int, cpu_s: float) -> Figures:
    ms = [v * 1000 for v in latencies]
    if not ms:
        nan = float("nan")
        return Figures(0, errors, nan, nan, nan, nan)
    return Figures(
        sends=len(ms),
        errors=errors,
        p50_ms=round(percentile(ms, 50), 3),
        p99_ms=round(percentile(ms, 99), 3),
        mean_ms=round(sum(ms) / len(ms), 3),
        gateway_cpu_us_per_send=round(cpu_s * 1e6 / len(ms), 1),
    )


class Sender:
    """One socket that sends and waits for each ack (events in between are skipped)."""

    def __init__(self, ws: ClientConnection, user: str) -> None:
        self.ws = ws
        self.user = user
        self.n = 0

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        ref = frame["ref"]
        await self.ws.send(orjson.dumps(frame).decode())
        while True:
            reply: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if reply.get("ref") == ref:
                return reply

    async def send(self) -> tuple[float, bool]:
        """One send → ack: (seconds, acknowledged)."""
        self.n += 1
        frame = {"type": "send", "room": ROOM, "text": f"m{self.n}", "id": f"{self.n}",
                 "ref": f"r{self.n}"}  # fmt: skip
        start = time.perf_counter()
        reply = await self.request(frame)
        return time.perf_counter() - start, reply.get("type") == "ack"


async def _senders(url: str, prefix: str, n: int) -> list[Sender]:
    out = []
    for i in range(n):
        user = f"{prefix}-u{i}"
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token(user, ttl_s=24 * 3600)}"},
            max_size=None,
        )
        welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        assert welcome["type"] == "welcome", welcome
        sender = Sender(ws, user)
        joined = await sender.request({"type": "join", "room": ROOM, "ref": "join"})
        assert joined["type"] == "joined", joined
        out.append(sender)
    return out


async def _round(senders: list[Sender], per_round: int, into: list[float]) -> int:
    """Every sender sends `per_round` times, all senders at once; returns the errors."""

    async def one(sender: Sender) -> int:
        errors = 0
        for _ in range(per_round):
            elapsed, ok = await sender.send()
            if ok:
                into.append(elapsed)
            else:
                errors += 1
        return errors

    return sum(await asyncio.gather(*(one(s) for s in senders)))


async def _bench(args: argparse.Namespace) -> int:
    namespace = f"hookbench{uuid.uuid4().hex[:8]}"
    secret = new_secret()
    hook_port, plain_port, hooked_port = free_port(), free_port(), free_port()
    base = {
        **os.environ,
        "REDIS_URL": args.redis_url,
        "ROOMSTREAM_NAMESPACE": namespace,
        "ROOMSTREAM_JWT_SECRET": jwt_secret(),
        "ROOMSTREAM_DEV_MODE": "1",
        "ROOMSTREAM_LOG_LEVEL": "WARNING",
        "ROOMSTREAM_SEND_RATE_PER_S": "1000000",  # the bench measures latency, not the budget
        "ROOMSTREAM_SEND_BURST": "1000000",
    }
    hooked_env = {
        "ROOMSTREAM_PUBLISH_HOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
        "ROOMSTREAM_PUBLISH_HOOK_SECRET": secret,
        "ROOMSTREAM_PUBLISH_HOOK_TIMEOUT_MS": str(args.timeout_ms),
    }
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=env)
        procs.append(proc)
        return proc

    redis = aioredis.Redis.from_url(args.redis_url)
    senders: list[Sender] = []
    try:
        hook = start([sys.executable, "-c", HOOK, secret, str(hook_port), args.action], base)
        await wait_http(f"http://127.0.0.1:{hook_port}/ok", proc=hook)
        gateways = {}
        for name, port, extra in (
            ("no_hook", plain_port, {}),
            ("hook", hooked_port, hooked_env),
        ):
            env = {**base, **extra, "ROOMSTREAM_PORT": str(port), "ROOMSTREAM_NODE_ID": name}
            gateways[name] = start([sys.executable, "-m", "roomstream_gateway"], env)
            await wait_http(f"http://127.0.0.1:{port}/readyz", proc=gateways[name])
        await create_room_direct(redis, stream_keys(namespace), ROOM, ROOM)
        plain = await _senders(f"ws://127.0.0.1:{plain_port}/ws", "plain", args.clients)
        hooked = await _senders(f"ws://127.0.0.1:{hooked_port}/ws", "hooked", args.clients)
        senders = plain + hooked
        await _round(plain + hooked, 5, [])  # warm-up: connections, caches
        results: dict[str, list[float]] = {"no_hook": [], "hook": []}
        errors = {"no_hook": 0, "hook": 0}
        cpu = {"no_hook": 0.0, "hook": 0.0, "endpoint": 0.0}
        for r in range(args.rounds):
            order = [("no_hook", plain), ("hook", hooked)]
            for name, group in order if r % 2 == 0 else order[::-1]:
                pid = gateways[name].pid
                gw0, ep0 = procstat.cpu_seconds(pid), procstat.cpu_seconds(hook.pid)
                errors[name] += await _round(group, args.per_round, results[name])
                cpu[name] += procstat.cpu_seconds(pid) - gw0
                if name == "hook":
                    cpu["endpoint"] += procstat.cpu_seconds(hook.pid) - ep0
        log(f"{args.rounds} rounds done", prefix="bench publish-hook")
    finally:
        for s in senders:
            with contextlib.suppress(Exception):
                await s.ws.close()
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        async for key in redis.scan_iter(match=f"{namespace}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()

    no_hook = figures(results["no_hook"], errors["no_hook"], cpu["no_hook"])
    with_hook = figures(results["hook"], errors["hook"], cpu["hook"])
    result = Result(
        clients_per_gateway=args.clients,
        sends_per_gateway=args.rounds * args.per_round * args.clients,
        action=args.action,
        no_hook=no_hook,
        hook=with_hook,
        hook_p50_ms=round(with_hook.p50_ms - no_hook.p50_ms, 3),
        hook_p99_ms=round(with_hook.p99_ms - no_hook.p99_ms, 3),
        hook_endpoint_cpu_us_per_send=round(cpu["endpoint"] * 1e6 / max(1, with_hook.sends), 1),
    )
    if args.json:
        print(orjson.dumps(asdict(result), option=orjson.OPT_INDENT_2).decode())
    else:
        print(
            f"send → ack, {result.sends_per_gateway} sends per gateway from "
            f"{args.clients} sockets each (closed loop), hook answers {args.action}:"
        )
        for label, f in (("no hook   ", no_hook), ("local hook", with_hook)):
            print(
                f"  {label}: p50 {f.p50_ms:.3f} ms  p99 {f.p99_ms:.3f} ms  mean "
                f"{f.mean_ms:.3f} ms  gateway CPU {f.gateway_cpu_us_per_send:.0f} µs/send  "
                f"({f.sends} acked, {f.errors} errors)"
            )
        print(
            f"  the hook adds p50 {result.hook_p50_ms:+.3f} ms, p99 {result.hook_p99_ms:+.3f} ms; "
            f"the hook endpoint's CPU {result.hook_endpoint_cpu_us_per_send:.0f} µs/send"
        )
    return 0 if no_hook.errors == 0 and with_hook.errors == 0 else 1
