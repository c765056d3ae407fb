"""`roomstream bench publish`: requests/s and latency of the rooms service's publish API.

Against a running rooms service (`--url`, e.g. the one of `roomstream up`): creates `--rooms`
public rooms, then `--concurrency` client tasks of this process each publish in a loop
(`POST /rooms/{room}/messages` with a fresh id, or with `--batch K` `POST /messages` with K
messages over K rooms) for `--warmup` + `--duration` seconds; the measured window's answers are
counted. Prints requests/s, messages/s, latency p50 / p99 / max, errors, and the rooms process's
CPU µs per message (found in the node records, or `--rooms-pid`). Checks that the rooms' seqs
grew by exactly the number of messages answered 200 (no loss, no double append).

The client shares the machine's cores with the rooms service and Redis (httpx costs CPU too: the
client's own CPU time is printed beside).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass

import httpx
import orjson
import redis.asyncio as aioredis

from ..common import env_rooms_url, service_token
from ..rooms import create_room_api
from . import procstat
from .plumbing import add_json_arg, add_redis_args
from .stats import Histogram


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "publish",
        help="rooms service: publish API requests/s and latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default=env_rooms_url() or "http://127.0.0.1:8100", help="rooms API")
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    p.add_argument("--batch", type=int, default=0, help="K messages per POST /messages (0: single)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (2)")
    p.add_argument("--text-bytes", type=int, default=100, help="message text size (100)")
    p.add_argument("--room-prefix", default="pubbench")
    p.add_argument("--rooms-pid", type=int, default=0, help="default: the node records")
    add_redis_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


@dataclass(slots=True)
class Result:
    concurrency: int
    batch: int
    rooms: int
    duration_s: float
    requests: int
    messages: int
    errors: int
    requests_per_s: float
    messages_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float
    appended: int
    """How much the rooms' seqs grew over the whole run (must equal every 200-answered message)."""
    answered: int
    """Messages answered 200 over the whole run (warm-up included)."""
    server_cpu_us_per_message: float | None
    client_cpu_s: float


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    messages: int = 0
    errors: int = 0
    answered: int = 0


def run(args: argparse.Namespace) -> int:
    result = asyncio.run(_bench(args))
    if args.json:
        print(orjson.dumps(asdict(result)).decode())
    else:
        _print(result)
    return 0 if result.appended == result.answered else 1


async def _bench(args: argparse.Namespace) -> Result:
    url = args.url.rstrip("/")
    rooms = [f"{args.room_prefix}-{i}" for i in range(args.rooms)]
    for room in rooms:
        await create_room_api(url, room, room)
    headers = {"Authorization": f"Bearer {service_token()}"}
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:
        before = await _seqs(http, rooms)
        pid = args.rooms_pid or await _rooms_pid(args.redis_url, args.namespace)
        counts, hist = _Counts(), Histogram()
        text = "x" * args.text_bytes
        start = time.monotonic()
        measure_from, measure_to = start + args.warmup, start + args.warmup + args.duration
        window = _Counts()
        cpu: list[float] = []

        async def client(n: int) -> None:
            i = 0
            while (now := time.monotonic()) < measure_to:
                i += 1
                cid = f"{os.getpid()}-{n}-{i}"
                if args.batch:
                    items = [
                        {"room": rooms[(n + i + k) % len(rooms)], "text": text, "id": f"{cid}-{k}"}
                        for k in range(args.batch)
                    ]
                    r = await http.post("/messages", json={"messages": items})
                    ok = (
                        sum("error" not in x for x in r.json()["results"])
                        if r.status_code == 200
                        else 0
                    )
                    size = args.batch
                else:
                    room = rooms[(n + i) % len(rooms)]
                    r = await http.post(f"/rooms/{room}/messages", json={"text": text, "id": cid})
                    ok, size = (1 if r.status_code == 200 else 0), 1
                took = time.monotonic() - now
                counts.answered += ok
                if measure_from <= now:
                    window.requests += 1
                    window.messages += size
                    window.errors += size - ok
                    hist.add(took)

        async def sample_cpu() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
            cpu.append(procstat.cpu_seconds(pid) if pid else 0.0)
            await asyncio.sleep(max(0.0, measure_to - time.monotonic()))
            cpu.append(procstat.cpu_seconds(pid) if pid else 0.0)

        client_cpu = time.process_time()
        await asyncio.gather(sample_cpu(), *(client(n) for n in range(args.concurrency)))
        client_cpu = time.process_time() - client_cpu
        after = await _seqs(http, rooms)
    duration = args.duration
    p50, p99 = hist.percentile(50), hist.percentile(99)
    return Result(
        concurrency=args.concurrency,
        batch=args.batch,
        rooms=args.rooms,
        duration_s=duration,
        requests=window.requests,
        messages=window.messages,
        errors=window.errors,
        requests_per_s=round(window.requests / duration, 1),
        messages_per_s=round(window.messages / duration, 1),
        p50_ms=None if p50 is None else round(p50 * 1000, 2),
        p99_ms=None if p99 is None else round(p99 * 1000, 2),
        max_ms=round(hist.max_s * 1000, 2),
        appended=sum(after[r] - before[r] for r in rooms),
        answered=counts.answered,
        server_cpu_us_per_message=(
            round((cpu[1] - cpu[0]) * 1e6 / (window.messages - window.errors), 1)
            if pid and len(cpu) == 2 and window.messages > window.errors
            else None
        ),
        client_cpu_s=round(client_cpu, 2),
    )


async def _seqs(http: httpx.AsyncClient, rooms: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for room in rooms:
        r = await http.get(f"/rooms/{room}")
        r.raise_for_status()
        out[room] = int(r.json()["seq"])
    return out


async def _rooms_pid(redis_url: str, namespace: str) -> int:
    """The pid of a live rooms process from the node records (0: none found)."""
    from .command import _node_record_pids  # the fan-out bench's module imports this one

    redis = aioredis.Redis.from_url(redis_url)
    try:
        pids = await _node_record_pids(redis, namespace, b"rooms")
    finally:
        await redis.aclose()
    return pids[0] if pids else 0


def _print(r: Result) -> None:
    mode = f"batches of {r.batch}" if r.batch else "single messages"
    print(
        f"publish API, {mode}, {r.concurrency} in flight, {r.rooms} rooms, {r.duration_s:.0f} s:\n"
        f"  requests/s {r.requests_per_s}  messages/s {r.messages_per_s}  errors {r.errors}\n"
        f"  latency p50 {r.p50_ms} ms  p99 {r.p99_ms} ms  max {r.max_ms} ms\n"
        f"  rooms process CPU µs/message {r.server_cpu_us_per_message}  "
        f"client CPU {r.client_cpu_s} s\n"
        f"  appended {r.appended} = answered {r.answered}: "
        f"{'ok' if r.appended == r.answered else 'MISMATCH'}",
        file=sys.stdout,
    )
