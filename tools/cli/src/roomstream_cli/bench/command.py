"""`roomstream bench`: N clients in R rooms over the gateways, a fixed total publish rate.

1. Creates the rooms (rooms API; straight into the log when the rooms service is absent).
2. Finds the gateway processes (`--gateway-pids`, else the node records in Redis, which carry
   `pid`) and reads their RSS.
3. Starts `--workers` load-generator processes (`worker`), which connect their share of the
   clients (round-robin over the gateway URLs) and join each client's room.
4. Reads the gateways' RSS again (RSS per connection), schedules warm-up and measurement, samples
   the gateways' CPU time (utime+stime) at the window's edges, and collects the workers' counts.
5. Prints deliveries/s, loss, duplicates, latency p50/p99/max, CPU µs per delivered frame and RSS
   KB per connection (JSON with `--json`).

The load generator runs on the same cores as the gateways and Redis: its CPU is not counted in
the gateways' figures, but it competes with them for the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from roomstream_kit.redis import text

from ..common import jwt_secret, stream_keys
from ..rooms import RoomsApiUnavailable, create_room_api, create_room_direct
from . import procstat, publish, publish_hook, services
from .nodes import live_pids_by_kind, node_records
from .plumbing import (
    add_json_arg,
    add_redis_args,
    log,
    read_line,
    reap,
    run_loop,
    send_line,
    split_urls,
    start_worker,
)
from .stats import Histogram


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: the gateways' fan-out; `bench history`, `bench hooks`, `bench publish`, `bench publish-hook`: one part",
        description="N clients in R rooms over the gateways, a fixed total publish rate; prints "
        "deliveries/s, loss, duplicates, latency, gateway CPU µs per frame and RSS KB per "
        "connection.",
    )
    p.add_argument(
        "--urls",
        default="ws://127.0.0.1:8000/ws,ws://127.0.0.1:8001/ws",
        help="comma-separated gateway WebSocket URLs (both local gateways)",
    )
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--rate", type=float, default=400.0, help="messages/s in total (400)")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds (30)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (5)")
    p.add_argument("--drain", type=float, default=3.0, help="seconds to wait for stragglers")
    p.add_argument("--workers", type=int, default=2, help="load-generator processes (2)")
    p.add_argument("--room-prefix", default="bench", help="rooms PREFIX-0 … PREFIX-(R-1)")
    p.add_argument("--user-prefix", default="bench", help="users PREFIX-u0 …")
    add_redis_args(p, rooms_url=True)
    p.add_argument("--gateway-pids", default="", help="comma-separated; default: node records")
    add_json_arg(p)
    p.set_defaults(func=run)
    family = p.add_subparsers(
        dest="bench",
        metavar="{history,hooks,publish,publish-hook}",
        help="benchmarks of one service instead",
    )
    services.add_history_parser(family)
    services.add_hooks_parser(family)
    publish.add_parser(family)
    publish_hook.add_parser(family)


@dataclass(slots=True)
class Result:
    clients: int
    rooms: int
    gateways: int
    rate: float
    duration_s: float
    published: int
    expected_deliveries: int
    received_deliveries: int
    loss: int
    loss_ratio: float
    duplicates: int
    deliveries_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    ack_p50_ms: float | None
    """Send → ack (the append path without the fan-out)."""
    ack_p99_ms: float | None
    gateway_cpu_us_per_frame: float | None
    gateway_cpu_percent: float | None
    load_generator_cpu_percent: float
    """CPU of the bench's own worker processes in the window (they share the machine)."""
    rss_kb_per_connection: float | None
    send_errors: dict[str, int]
    reconnects: int
    gateway_pids: list[int]


def run(args: argparse.Namespace) -> int:
    return run_loop(_bench(args))


async def _bench(args: argparse.Namespace) -> int:
    urls = split_urls(args.urls)
    rooms = [f"{args.room_prefix}-{i}" for i in range(args.rooms)]
    workers = max(1, min(args.workers, args.clients))
    redis = aioredis.Redis.from_url(args.redis_url)
    try:
        await _create_rooms(redis, args, rooms)
        pids = await _gateway_pids(redis, args)
    finally:
        await redis.aclose()
    if not pids:
        log("no gateway process found: CPU and RSS figures are left out (see --gateway-pids)")
    rss_before = procstat.total_rss_kb(pids)

    procs = [await _start_worker(args, urls, rooms, w, workers) for w in range(workers)]
    try:
        ready = sum([int((await read_line(p, 600))["ready"]) for p in procs])
        log(f"{ready} clients connected and joined over {len(urls)} gateway(s)")
        await asyncio.sleep(1.0)  # let the joins' fan-out settle before measuring memory
        rss_after = procstat.total_rss_kb(pids)
        now = time.time()
        schedule = {
            "start": now + 0.5,
            "measure_start": now + 0.5 + args.warmup,
            "measure_end": now + 0.5 + args.warmup + args.duration,
            "drain_end": now + 0.5 + args.warmup + args.duration + args.drain,
        }
        await send_line(procs, schedule)
        await asyncio.sleep(max(0.0, schedule["measure_start"] - time.time()))
        cpu_start = procstat.total_cpu_seconds(pids)
        await asyncio.sleep(max(0.0, schedule["measure_end"] - time.time()))
        cpu_end = procstat.total_cpu_seconds(pids)
        reports = [await read_line(p, args.drain + 120) for p in procs]
    finally:
        await reap(procs)

    result = _summarize(
        args, rooms, ready, reports, pids, rss_before, rss_after, cpu_start, cpu_end
    )
    if args.json:
        print(orjson.dumps(asdict(result), option=orjson.OPT_INDENT_2).decode())
    else:
        _print(result)
    return 0


async def _create_rooms(redis: aioredis.Redis, args: argparse.Namespace, rooms: list[str]) -> None:
    secret = jwt_secret()
    for room in rooms:
        if args.rooms_url:
            try:
                await create_room_api(args.rooms_url, room, room, secret)
                continue
            except RoomsApiUnavailable as exc:
                log(f"rooms API unavailable ({exc}); creating rooms directly in the log")
                args.rooms_url = ""
        await create_room_direct(redis, stream_keys(args.namespace), room, room)


async def _gateway_pids(redis: aioredis.Redis, args: argparse.Namespace) -> list[int]:
    if args.gateway_pids:
        return [int(p) for p in args.gateway_pids.split(",") if p.strip()]
    # Gateways that just started may not have written their first heartbeat yet.
    expected = len(split_urls(args.urls))
    pids: list[int] = []
    for _ in range(20):
        pids = await _node_record_pids(redis, args.namespace)
        if len(pids) >= expected:
            break
        await asyncio.sleep(0.5)
    return pids


async def _node_record_pids(
    redis: aioredis.Redis, namespace: str, kind: bytes = b"gateway"
) -> list[int]:
    """Pids of the live processes of `kind` in the node records."""
    return live_pids_by_kind(await node_records(redis, namespace)).get(text(kind), [])


def worker_share(
    args: argparse.Namespace, urls: list[str], rooms: list[str], w: int, workers: int
) -> dict[str, Any]:
    """What worker `w` of `workers` is given by `bench` and `bench-connects` alike: the gateway
    URLs, the rooms, the JWT secret and its share of the users (every `workers`-th index)."""
    return {
        "urls": urls,
        "rooms": rooms,
        "secret": jwt_secret(),
        "user_prefix": args.user_prefix,
        "indices": list(range(w, args.clients, workers)),
    }


async def _start_worker(
    args: argparse.Namespace, urls: list[str], rooms: list[str], w: int, workers: int
) -> asyncio.subprocess.Process:
    config = {**worker_share(args, urls, rooms, w, workers), "rate": args.rate / workers}
    # The result line carries a latency histogram: a large line limit.
    return await start_worker("roomstream_cli.bench.worker", config, limit=64 * 1024 * 1024)


def _summarize(
    args: argparse.Namespace,
    rooms: list[str],
    clients: int,
    reports: list[dict[str, Any]],
    pids: list[int],
    rss_before: int,
    rss_after: int,
    cpu_start: float,
    cpu_end: float,
) -> Result:
    members = {room: 0 for room in rooms}
    for i in range(args.clients):
        members[rooms[i % len(rooms)]] += 1
    published: dict[str, int] = {}
    latency = Histogram()
    acks = Histogram()
    for r in reports:
        acks.merge(Histogram.from_json(r.get("ack_latency") or {}))
        for room, n in r["published"].items():
            published[room] = published.get(room, 0) + n
        latency.merge(Histogram.from_json(r["latency"]))
    expected = sum(n * members[room] for room, n in published.items())
    received = sum(int(r["measured_received"]) for r in reports)
    frames = sum(int(r["window_frames"]) for r in reports)
    cpu_s = cpu_end - cpu_start

    def ms(value: float | None) -> float | None:
        return round(value * 1000, 2) if value is not None else None

    return Result(
        clients=clients,
        rooms=len(rooms),
        gateways=len(pids),
        rate=args.rate,
        duration_s=args.duration,
        published=sum(published.values()),
        expected_deliveries=expected,
        received_deliveries=received,
        loss=max(0, expected - received),
        loss_ratio=round(max(0, expected - received) / expected, 6) if expected else 0.0,
        duplicates=sum(int(r["duplicates"]) for r in reports),
        deliveries_per_s=round(frames / args.duration, 1),
        latency_p50_ms=ms(latency.percentile(50)),
        latency_p99_ms=ms(latency.percentile(99)),
        latency_max_ms=ms(latency.max_s if latency.count else None),
        ack_p50_ms=ms(acks.percentile(50)),
        ack_p99_ms=ms(acks.percentile(99)),
        gateway_cpu_us_per_frame=round(cpu_s * 1e6 / frames, 2) if pids and frames else None,
        gateway_cpu_percent=round(100 * cpu_s / args.duration, 1) if pids else None,
        load_generator_cpu_percent=round(
            100 * sum(float(r.get("cpu_s", 0.0)) for r in reports) / args.duration, 1
        ),
        rss_kb_per_connection=round((rss_after - rss_before) / clients, 2)
        if pids and clients
        else None,
        send_errors=_add_counts([r["send_errors"] for r in reports]),
        reconnects=sum(int(r["reconnects"]) for r in reports),
        gateway_pids=pids,
    )


def _add_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + int(v)
    return total


def _print(r: Result) -> None:
    lines = [
        f"clients {r.clients} over {r.gateways} gateway process(es), {r.rooms} rooms, "
        f"{r.rate:g} msg/s for {r.duration_s:g} s",
        f"published         {r.published} acknowledged messages (errors {r.send_errors or 0})",
        f"deliveries/s      {r.deliveries_per_s:,.0f}",
        f"loss              {r.loss} of {r.expected_deliveries} ({100 * r.loss_ratio:.3f} %)",
        f"duplicates        {r.duplicates}",
        f"latency ms        p50 {r.latency_p50_ms}  p99 {r.latency_p99_ms}  max {r.latency_max_ms}",
        f"send → ack ms     p50 {r.ack_p50_ms}  p99 {r.ack_p99_ms}",
        f"gateway CPU       {r.gateway_cpu_us_per_frame} µs per delivered frame "
        f"({r.gateway_cpu_percent} % of one core, all gateways)",
        f"gateway RSS       {r.rss_kb_per_connection} KB per connection",
        f"load generator    {r.load_generator_cpu_percent} % of one core (shares the machine)",
        f"reconnects        {r.reconnects}",
    ]
    print("\n".join(lines))
