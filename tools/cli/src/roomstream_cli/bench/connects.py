"""`roomstream bench-connects` and `roomstream bench-idle`: what connections cost.

`bench-connects`: N bare sockets (`connworker` processes, round-robin over the gateway URLs),
user *i* in room *i mod R* (created first, as `roomstream bench` does), in three phases:
1. **connect**: every socket at once (`--concurrency` in flight per worker): connect, `welcome`,
   `join`. Connects/s = N / wall time until the last `joined`; gateway CPU per connect = CPU
   time of the gateway processes over the phase / N; the other services' CPU over the phase too
   (the rooms service's presence work).
2. **idle**: after `--settle` s, the gateways' CPU over `--idle` s with every socket open and
   silent: % of one core, and per 10,000 sockets; RSS per socket.
3. **reconnect**: every socket dropped at once (TCP abort), then all reconnect and resume their
   room (`join since=LAST`): wall time until all are welcomed and resumed, gateway CPU per
   reconnect.

`bench-idle`: the CPU of every process with a node record (gateways, rooms, history, monitor,
hooks) over `--seconds` with no traffic: % of one core per process and in total.

Processes are found by their node records (`NS:node:NODE`, field `pid`) unless given.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from . import plumbing, procstat
from .command import _create_rooms, worker_share
from .nodes import live_pids_by_kind, node_records


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench-connects",
        help="connect burst, idle sockets and mass reconnect over the gateways",
        description="N sockets connect at once, sit idle, then all reconnect and resume; "
        "prints connects/s, gateway CPU per connect, idle CPU per 10,000 sockets, RSS per "
        "socket and the time until all reconnected sockets are resumed.",
    )
    p.add_argument("--urls", default="ws://127.0.0.1:8000/ws,ws://127.0.0.1:8001/ws")
    p.add_argument("--clients", type=int, default=10_000)
    p.add_argument("--rooms", type=int, default=200, help="rooms (200: 50 members each)")
    p.add_argument("--workers", type=int, default=4, help="load-generator processes (4)")
    p.add_argument("--concurrency", type=int, default=500, help="connects in flight per worker")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before the idle window")
    p.add_argument("--idle", type=float, default=30.0, help="idle window in seconds (30)")
    p.add_argument("--no-reconnect", action="store_true", help="skip the reconnect phase")
    p.add_argument("--room-prefix", default="cb")
    p.add_argument("--user-prefix", default="cb")
    _common(p)
    p.set_defaults(func=run_connects)

    q = sub.add_parser(
        "bench-idle",
        help="CPU of the idle system's processes",
        description="CPU %% of every registered process (node records) over a window with no "
        "traffic.",
    )
    q.add_argument("--seconds", type=float, default=30.0)
    _common(q)
    q.set_defaults(func=run_idle)


def _common(p: argparse.ArgumentParser) -> None:
    plumbing.add_redis_args(p, rooms_url=True)
    plumbing.add_json_arg(p)


def run_connects(args: argparse.Namespace) -> int:
    return plumbing.run_loop(_connects(args))


def run_idle(args: argparse.Namespace) -> int:
    return plumbing.run_loop(_idle(args))


async def node_pids(redis_url: str, namespace: str) -> dict[str, list[int]]:
    """The live pids of the node records, by kind (gateway, rooms, history, …)."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        return live_pids_by_kind(await node_records(redis, namespace))
    finally:
        await redis.aclose()


def _cpu_by_kind(by_kind: dict[str, list[int]]) -> dict[str, float]:
    return {kind: procstat.total_cpu_seconds(pids) for kind, pids in by_kind.items()}


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 3) for k in after}


async def _idle(args: argparse.Namespace) -> int:
    by_kind = await node_pids(args.redis_url, args.namespace)
    if not by_kind:
        raise SystemExit("bench: no node record with a live pid in this namespace")
    start_cpu, start = _cpu_by_kind(by_kind), time.monotonic()
    await asyncio.sleep(args.seconds)
    used, wall = _delta(_cpu_by_kind(by_kind), start_cpu), time.monotonic() - start
    percent = {k: round(100 * v / wall, 2) for k, v in used.items()}
    result = {
        "seconds": round(wall, 1),
        "pids": by_kind,
        "cpu_percent": percent,
        "cpu_percent_total": round(sum(percent.values()), 2),
        "cpu_percent_without_gateways": round(
            sum(v for k, v in percent.items() if k != "gateway"), 2
        ),
    }
    _output(args, result)
    return 0


async def _connects(args: argparse.Namespace) -> int:
    urls = plumbing.split_urls(args.urls)
    rooms = [f"{args.room_prefix}-{i}" for i in range(args.rooms)]
    redis = aioredis.Redis.from_url(args.redis_url)
    try:
        await _create_rooms(redis, args, rooms)
    finally:
        await redis.aclose()
    by_kind = await node_pids(args.redis_url, args.namespace)
    gateways = by_kind.get("gateway", [])
    if not gateways:
        plumbing.log("no gateway process found: CPU and RSS figures are left out")
    rss_before = sum(procstat.rss_kb(p) for p in gateways)
    workers = max(1, min(args.workers, args.clients))
    procs = [await _start_worker(args, urls, rooms, w, workers) for w in range(workers)]
    result: dict[str, Any] = {"clients": args.clients, "rooms": args.rooms, "pids": by_kind}
    try:
        for p in procs:
            await plumbing.read_line(p, 120)
        plumbing.log(f"{workers} workers ready, {args.clients} sockets to open")
        result["connect"] = await _timed_phase(procs, "connect", by_kind, args.clients)
        await asyncio.sleep(args.settle)
        rss_after = sum(procstat.rss_kb(p) for p in gateways)
        result["rss_kb_per_socket"] = round((rss_after - rss_before) / args.clients, 2)
        result["gateway_rss_mb"] = round(rss_after / 1024, 1)
        plumbing.log(f"idle window of {args.idle:g} s")
        start_cpu, start = _cpu_by_kind(by_kind), time.monotonic()
        await asyncio.sleep(args.idle)
        used, wall = _delta(_cpu_by_kind(by_kind), start_cpu), time.monotonic() - start
        gw = 100 * used.get("gateway", 0.0) / wall
        result["idle"] = {
            "seconds": round(wall, 1),
            "gateway_cpu_percent": round(gw, 2),
            "gateway_cpu_percent_per_10k": round(gw * 10_000 / args.clients, 2),
            "cpu_percent": {k: round(100 * v / wall, 2) for k, v in used.items()},
        }
        if not args.no_reconnect:
            result["reconnect"] = await _timed_phase(procs, "reconnect", by_kind, args.clients)
        await _send_all(procs, "close")
        for p in procs:
            await plumbing.read_line(p, 90)
    finally:
        await plumbing.reap(procs)
    _output(args, result)
    return 0


async def _timed_phase(
    procs: list[asyncio.subprocess.Process], phase: str, by_kind: dict[str, list[int]], n: int
) -> dict[str, Any]:
    start_cpu, start = _cpu_by_kind(by_kind), time.monotonic()
    await _send_all(procs, phase)
    reports = [await plumbing.read_line(p, 900) for p in procs]
    wall = time.monotonic() - start
    used = _delta(_cpu_by_kind(by_kind), start_cpu)
    errors: dict[str, int] = {}
    for r in reports:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    out = {
        "wall_s": round(wall, 2),
        "per_s": round(n / wall, 1),
        "gateway_cpu_ms_per_connect": round(1000 * used.get("gateway", 0.0) / n, 3),
        "cpu_s": used,
        "retries": sum(int(r["retries"]) for r in reports),
        "errors": errors,
        "missed_events_replayed": sum(int(r["missed"]) for r in reports),
    }
    plumbing.log(f"{phase}: {out}")
    return out


async def _send_all(procs: list[asyncio.subprocess.Process], phase: str) -> None:
    await plumbing.send_line(procs, {"phase": phase})


async def _start_worker(
    args: argparse.Namespace, urls: list[str], rooms: list[str], w: int, workers: int
) -> asyncio.subprocess.Process:
    config = {**worker_share(args, urls, rooms, w, workers), "concurrency": args.concurrency}
    return await plumbing.start_worker("roomstream_cli.bench.connworker", config)


def _output(args: argparse.Namespace, result: dict[str, Any]) -> None:
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text if args.json else text.replace('"', ""))
