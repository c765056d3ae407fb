"""`roomstream bench-routing`: what a gateway spends on events of rooms it has no socket in.

Gateway 0 holds one member socket in each of R busy rooms; every other gateway holds `--quiet`
sockets in a quiet room of its own (disjoint rooms, no socket in a busy room). The bench appends
`--rate` messages/s to the busy rooms straight into the log (as a gateway would, through the append
script) and measures, over `--duration` seconds:

- the CPU time (utime + stime) of every gateway but the first, minus the same processes' CPU in
  an equally long idle window right before: **CPU µs per irrelevant event** = that difference /
  events appended / gateways;
- Redis's egress (`INFO stats` `total_net_output_bytes`) per appended event (use a Redis of the
  bench's own: other clients count too);
- `roomstream_gateway_events_received_total` of every gateway (where it exists).

Gateways are found by their node records (`pid`, `address`) in the namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_kit.eventlog import EventLog, RoomCheck
from websockets.asyncio.client import ClientConnection, connect

from ..common import stream_keys, token
from ..rooms import create_room_direct
from . import plumbing, procstat
from .nodes import node_records
from .plumbing import add_redis_args, split_urls


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench-routing",
        help="gateway CPU and Redis egress per event of rooms a gateway has no socket in",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--urls", required=True, help="comma-separated gateway ws URLs (>= 2)")
    p.add_argument("--rooms", type=int, default=20, help="busy rooms (20)")
    p.add_argument("--quiet", type=int, default=25, help="sockets per other gateway (25)")
    p.add_argument("--rate", type=float, default=400.0, help="messages/s to the busy rooms")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds (15)")
    add_redis_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = asyncio.run(_bench(args))
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    urls = split_urls(args.urls)
    keys = stream_keys(args.namespace)
    redis = aioredis.from_url(args.redis_url)
    run_id = new_event_id()[-6:]
    busy = [f"busy-{run_id}-{i}" for i in range(args.rooms)]
    quiet = [f"quiet-{run_id}-{i}" for i in range(1, len(urls))]
    for room in busy + quiet:
        await create_room_direct(redis, keys, room, room)
    pids = await _pids(redis, args.namespace, urls)
    sockets: list[ClientConnection] = []
    readers: list[asyncio.Task[None]] = []
    for i, room in enumerate(busy):
        sockets.append(await _member(urls[0], f"busy-u{run_id}-{i}", room))
    for g, room in enumerate(quiet, start=1):
        for j in range(args.quiet):
            sockets.append(await _member(urls[g], f"quiet-u{run_id}-{g}-{j}", room))
    readers = [asyncio.create_task(_drain(ws)) for ws in sockets]
    others = [pids[u] for u in urls[1:]]
    plumbing.log(
        f"{len(sockets)} sockets; idle window of {args.duration:.0f} s", prefix="bench-routing"
    )
    await asyncio.sleep(1.0)
    c0 = procstat.total_cpu_seconds(others)
    await asyncio.sleep(args.duration)
    idle_cpu = procstat.total_cpu_seconds(others) - c0

    log = EventLog(redis, keys)
    received_before = [await _received(u) for u in urls]
    out0 = await _egress(redis)
    c0 = procstat.total_cpu_seconds(others)
    plumbing.log(
        f"publishing {args.rate:.0f} msg/s for {args.duration:.0f} s", prefix="bench-routing"
    )
    events = await _publish(log, busy, args.rate, args.duration)
    busy_cpu = procstat.total_cpu_seconds(others) - c0
    egress = await _egress(redis) - out0
    await asyncio.sleep(1.0)
    received = [
        (None if a is None or b is None else a - b)
        for a, b in zip([await _received(u) for u in urls], received_before, strict=True)
    ]
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()
    await redis.aclose()
    per_gateway = len(others)
    return {
        "events": events,
        "gateways_without_busy_sockets": per_gateway,
        "idle_cpu_s": round(idle_cpu, 3),
        "busy_cpu_s": round(busy_cpu, 3),
        "cpu_us_per_irrelevant_event": round(
            (busy_cpu - idle_cpu) / max(events, 1) / per_gateway * 1e6, 2
        ),
        "redis_egress_bytes_per_event": round(egress / max(events, 1), 1),
        "events_received_per_gateway": received,
    }


async def _member(url: str, user: str, room: str) -> ClientConnection:
    ws = await connect(
        url, additional_headers={"Authorization": f"Bearer {token(user, ttl_s=3600)}"}
    )
    welcome = orjson.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    await ws.send(orjson.dumps({"type": "join", "room": room, "ref": "j"}).decode())
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        if frame.get("ref") == "j":
            assert frame["type"] == "joined", frame
            return ws


async def _drain(ws: ClientConnection) -> None:
    async for _ in ws:
        pass


async def _publish(log: EventLog, rooms: list[str], rate: float, duration: float) -> int:
    """Appends at `rate`/s for `duration` s, round-robin over `rooms` (at most 50 in flight);
    the count appended."""
    start = time.monotonic()
    total = int(rate * duration)
    slots = asyncio.Semaphore(50)
    done = 0

    async def one(n: int) -> None:
        nonlocal done
        env = Envelope(
            id=new_event_id(),
            kind=EventKind.MESSAGE,
            room=rooms[n % len(rooms)],
            user="roomstream-cli",
            ts=now_ms(),
            data={"text": f"b{n}", "client_id": None},
        )
        try:
            if (await log.append(env, room_check=RoomCheck.EXISTS)).ok:
                done += 1
        finally:
            slots.release()

    tasks = []
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks, return_exceptions=True)
    return done


async def _pids(redis: aioredis.Redis, namespace: str, urls: list[str]) -> dict[str, int]:
    """Gateway URL → pid, from the node records (`address`, `pid`)."""
    for _ in range(40):
        found: dict[str, int] = {}
        for record in await node_records(redis, namespace):
            address = record.get(b"address", b"").decode()
            port = address.rsplit(":", 1)[-1].split("/")[0]
            for url in urls:
                if url.split(":")[-1].split("/")[0] == port and record.get(b"pid"):
                    found[url] = int(record[b"pid"])
        if len(found) == len(urls):
            return found
        await asyncio.sleep(0.5)
    raise SystemExit(f"bench-routing: node records of {urls} not found")


async def _egress(redis: aioredis.Redis) -> int:
    stats: Any = await redis.info("stats")
    return int(stats["total_net_output_bytes"])


async def _received(url: str) -> float | None:
    """`roomstream_gateway_events_received_total` of the gateway at a ws URL (None: absent)."""
    http_url = url.replace("ws://", "http://").rsplit("/ws", 1)[0]
    async with httpx.AsyncClient(timeout=5.0) as http:
        text = (await http.get(f"{http_url}/metrics")).text
    for line in text.splitlines():
        if line.startswith("roomstream_gateway_events_received_total"):
            return float(line.rsplit(" ", 1)[1])
    return None
