"""Quick fan-out probe of the gateway hot path (not the project's bench tool).

Starts 2 gateway processes on the local Redis (own namespace), connects N clients (in 2 client
processes) to R rooms, publishes M msg/s through the gateways for D seconds and prints deliveries/s,
gateway CPU µs per delivered frame (from /proc), RSS KB per connection and latency percentiles.

    uv run python services/gateway/scripts/fanout_probe.py --clients 1000 --rooms 20 --rate 400
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from roomstream_contracts.ids import now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.tokens import DEV_JWT_SECRET
from roomstream_kit.auth import issue_token
from roomstream_kit.rooms import seed_room
from websockets.asyncio.client import connect

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid: int) -> int:
    return (
        int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    )


async def setup(ns: str, clients: int, rooms: int) -> None:
    r = aioredis.Redis.from_url(REDIS_URL)
    k = StreamKeys(namespace=ns)
    for i in range(rooms):
        members = [f"u{j}" for j in range(clients) if j % rooms == i]
        await seed_room(r, k, f"r{i}", members[0], members=members)
    await r.aclose()


async def cleanup(ns: str) -> None:
    r = aioredis.Redis.from_url(REDIS_URL)
    async for key in r.scan_iter(match=f"{ns}:*", count=1000):
        await r.delete(key)
    await r.aclose()


def client_worker(urls: list[str], users: list[str], duration: float, q: Any) -> None:
    import uvloop

    async def main() -> None:
        counts = [0]
        lat: list[int] = []
        socks = []
        for i, user in enumerate(users):
            token = issue_token(DEV_JWT_SECRET, user)
            ws = await connect(
                urls[i % len(urls)],
                additional_headers={"Authorization": f"Bearer {token}"},
                compression=None,
                max_queue=64,
            )
            await ws.recv()  # welcome
            socks.append(ws)
        q.put(("ready", len(socks)))

        async def reader(ws: Any) -> None:
            async for raw in ws:
                if raw[:9] == '{"type":"' and '"event"' in raw[:20]:
                    counts[0] += 1
                    if counts[0] % 20 == 0:
                        lat.append(now_ms() - orjson.loads(raw)["ts"])

        tasks = [asyncio.create_task(reader(ws)) for ws in socks]
        await asyncio.sleep(duration)
        q.put(("done", counts[0], lat))
        for t in tasks:
            t.cancel()

    uvloop.run(main())


async def publish(urls: list[str], rooms: int, clients: int, rate: float, duration: float) -> int:
    socks = []
    for i in range(rooms):
        user = f"u{i}"  # member of room r{i} (u_j is in r{j % rooms})
        token = issue_token(DEV_JWT_SECRET, user)
        socks.append(
            await connect(
                urls[i % len(urls)],
                additional_headers={"Authorization": f"Bearer {token}"},
                compression=None,
            )
        )
        await socks[-1].recv()

    async def drain(ws: Any) -> None:
        async for _ in ws:
            pass

    drains = [asyncio.create_task(drain(ws)) for ws in socks]
    sent = 0
    start = time.monotonic()
    interval = 1.0 / rate
    while time.monotonic() - start < duration:
        i = sent % rooms
        await socks[i].send(
            orjson.dumps(
                {"type": "send", "room": f"r{i}", "text": "x" * 60, "id": uuid.uuid4().hex}
            ).decode()
        )
        sent += 1
        delay = start + sent * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    for d in drains:
        d.cancel()
    return sent


def _pick(values: list[int], q: float) -> int:
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--rate", type=float, default=400)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--compression", default="none")
    a = p.parse_args()
    ns = f"probe{uuid.uuid4().hex[:6]}"
    asyncio.run(setup(ns, a.clients, a.rooms))
    ports = [18701, 18702]
    env = {
        **os.environ,
        "ROOMSTREAM_NAMESPACE": ns,
        "ROOMSTREAM_SEND_RATE_PER_S": "100000",
        "ROOMSTREAM_SEND_BURST": "100000",
        "ROOMSTREAM_LOG_LEVEL": "WARNING",
        "ROOMSTREAM_COMPRESSION": a.compression,
    }
    gws = [
        subprocess.Popen(
            [sys.executable, "-m", "roomstream_gateway"], env={**env, "ROOMSTREAM_PORT": str(pt)}
        )
        for pt in ports
    ]
    try:
        for pt in ports:  # wait until each gateway answers /readyz
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{pt}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        urls = [f"ws://127.0.0.1:{pt}/ws" for pt in ports]
        rss0 = [proc_rss_kb(g.pid) for g in gws]
        q: Any = mp.Queue()
        users = [f"u{j}" for j in range(a.clients)]
        warm, total = 3.0, a.duration + 6.0
        workers = [
            mp.Process(target=client_worker, args=(urls, users[i::2], total + 30, q))
            for i in range(2)
        ]
        for w in workers:
            w.start()
        ready = sum(q.get(timeout=300)[1] for _ in workers)
        time.sleep(2)
        rss1 = [proc_rss_kb(g.pid) for g in gws]

        async def run() -> tuple[int, float, float]:
            pub = asyncio.create_task(publish(urls, a.rooms, a.clients, a.rate, a.duration + warm))
            await asyncio.sleep(warm)
            cpu0 = sum(proc_cpu_s(g.pid) for g in gws)
            t0 = time.monotonic()
            await asyncio.sleep(a.duration)
            cpu1 = sum(proc_cpu_s(g.pid) for g in gws)
            t1 = time.monotonic()
            sent = await pub
            return sent, cpu1 - cpu0, t1 - t0

        sent, cpu, wall = asyncio.run(run())
        time.sleep(2)
        # counts are cumulative over the whole run; estimate deliveries/s from the publish rate
        results = [q.get(timeout=120) for _ in workers]
        delivered = sum(r[1] for r in results)
        lat = sorted(x for r in results for x in r[2])
        expected = sent * (a.clients // a.rooms)
        per_s = a.rate * (a.clients // a.rooms)
        print(
            f"clients={ready} rooms={a.rooms} rate={a.rate}/s sent={sent} delivered={delivered} expected={expected}"
        )
        print(
            f"deliveries/s≈{per_s:.0f}  gateway CPU µs/delivery={cpu / (per_s * wall) * 1e6:.1f} (cpu {cpu:.2f}s over {wall:.1f}s)"
        )
        print(f"RSS KB per idle connection={(sum(rss1) - sum(rss0)) / ready:.1f}")
        if lat:
            print(f"latency ms p50={_pick(lat, 0.5)} p99={_pick(lat, 0.99)} max={lat[-1]}")
        for w in workers:
            w.terminate()
    finally:
        for g in gws:
            g.terminate()
            g.wait(20)
        asyncio.run(cleanup(ns))


if __name__ == "__main__":
    main()
