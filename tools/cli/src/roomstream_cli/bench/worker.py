"""A load-generator process of `roomstream bench`: many clients on one event loop.

Talks to the orchestrator with JSON lines: reads its config on stdin, prints
`{"ready": N}` once its clients are connected and joined, reads the schedule
`{"start", "measure_start", "measure_end", "drain_end"}` (wall-clock seconds), publishes its share
of the rate from `start` to `measure_end`, counts what its clients receive, and prints its results
at `drain_end`.

Message texts are `b|SEND_TIME|M`: the send time (time.time()) and whether the message belongs
to the measured window (M=1) or the warm-up (M=0).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from roomstream_client import Backoff, Client, ClientError, CommandError, Event
from roomstream_kit.auth import issue_token

from .plumbing import emit, run_loop, stdin_reader
from .stats import Histogram

TICK_S = 0.005


@dataclass(slots=True)
class Counters:
    measure_start: float = float("inf")
    measure_end: float = float("inf")
    window_frames: int = 0
    """Message frames received inside the measured window (deliveries/s, CPU per frame)."""
    measured_received: int = 0
    """Receipts of measured messages (loss)."""
    latency: Histogram = field(default_factory=Histogram)
    ack_latency: Histogram = field(default_factory=Histogram)
    """Send → ack of measured messages (the append path alone)."""
    published: dict[str, int] = field(default_factory=dict)
    send_errors: dict[str, int] = field(default_factory=dict)


def _on_event(counters: Counters) -> Any:
    def handle(event: Event) -> None:
        if event.type != "event" or event.kind != "message":
            return
        now = time.time()
        c = counters
        if c.measure_start <= now < c.measure_end:
            c.window_frames += 1
        text = event.data.get("text", "")
        if not text.startswith("b|") or not text.endswith("|1"):
            return
        c.measured_received += 1
        c.latency.add(now - float(text[2:-2]))

    return handle


async def _connect_all(
    config: dict[str, Any], counters: Counters
) -> tuple[list[Client], dict[str, list[Client]]]:
    urls: list[str] = config["urls"]
    rooms: list[str] = config["rooms"]
    secret: str = config["secret"]
    prefix: str = config["user_prefix"]
    gate = asyncio.Semaphore(int(config.get("connect_concurrency", 50)))
    handler = _on_event(counters)
    clients: list[Client] = []
    publishers: dict[str, list[Client]] = {}

    async def one(i: int) -> None:
        first = i % len(urls)
        ordered = urls[first:] + urls[:first]
        room = rooms[i % len(rooms)]
        token = issue_token(secret, f"{prefix}-u{i}", ttl_s=24 * 3600)
        client = Client(
            ordered,
            token,
            ping_interval=None,
            on_event=handler,
            backoff=Backoff(base=0.2, cap=5.0),
            connect_timeout=120.0,
            request_timeout=120.0,
        )
        async with gate:
            await client.connect()
            await client.join(room)
        clients.append(client)
        publishers.setdefault(room, []).append(client)

    await asyncio.gather(*(one(i) for i in config["indices"]))
    return clients, publishers


async def _publish(
    publishers: dict[str, list[Client]], rate: float, schedule: dict[str, float], c: Counters
) -> None:
    """Publish `rate` messages/s, rooms in turn, each room's clients in turn (so no user comes
    near the gateway's per-user send budget)."""
    rooms = sorted(publishers)
    if not rooms or rate <= 0:
        return
    start, end = schedule["start"], schedule["measure_end"]
    sent = 0
    tasks: set[asyncio.Task[None]] = set()

    async def send_one(room: str, sender: Client, measured: bool) -> None:
        sent_at = time.time()
        text = f"b|{sent_at:.6f}|{1 if measured else 0}"
        try:
            await sender.send(room, text)
        except CommandError as exc:
            c.send_errors[exc.code] = c.send_errors.get(exc.code, 0) + 1
            return
        except (ClientError, TimeoutError) as exc:
            name = type(exc).__name__
            c.send_errors[name] = c.send_errors.get(name, 0) + 1
            return
        if measured:
            c.published[room] = c.published.get(room, 0) + 1
            c.ack_latency.add(time.time() - sent_at)

    await asyncio.sleep(max(0.0, start - time.time()))
    while True:
        now = time.time()
        if now >= end:
            break
        due = int((now - start) * rate) - sent
        for _ in range(due):
            room = rooms[sent % len(rooms)]
            senders = publishers[room]
            sender = senders[(sent // len(rooms)) % len(senders)]
            measured = c.measure_start <= now < c.measure_end
            task = asyncio.create_task(send_one(room, sender, measured))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(TICK_S)
    if tasks:
        await asyncio.wait(tasks, timeout=30)


async def _main() -> None:
    reader = await stdin_reader()
    config = orjson.loads(await reader.readline())
    counters = Counters()
    clients, publishers = await _connect_all(config, counters)
    # The clients' long-lived objects (sockets, sessions, sequencers) out of the collector's
    # reach: a full collection over them would pause every client of this process for
    # milliseconds and show up in the measured latency (the load generator's, not the system's).
    gc.collect()
    gc.freeze()
    emit({"ready": len(clients)})
    schedule = orjson.loads(await reader.readline())

    async def exit_with_parent() -> None:
        # The orchestrator closes our stdin when it ends (or dies): stop at once then.
        await reader.read()
        os._exit(1)

    watcher = asyncio.create_task(exit_with_parent())
    counters.measure_start = schedule["measure_start"]
    counters.measure_end = schedule["measure_end"]

    def duplicates_so_far() -> int:
        return sum(client.sequencer.duplicates for client in clients)

    async def duplicates_at_measure_start() -> int:
        # Joins drop events from before each client's start as "duplicates": count from here on.
        await asyncio.sleep(max(0.0, counters.measure_start - time.time()))
        return duplicates_so_far()

    def cpu() -> float:
        t = os.times()
        return t.user + t.system

    async def cpu_in_window() -> float:
        await asyncio.sleep(max(0.0, counters.measure_start - time.time()))
        start = cpu()
        await asyncio.sleep(max(0.0, counters.measure_end - time.time()))
        return cpu() - start

    worker_cpu = asyncio.create_task(cpu_in_window())

    baseline = asyncio.create_task(duplicates_at_measure_start())
    await _publish(publishers, float(config["rate"]), schedule, counters)
    await asyncio.sleep(max(0.0, schedule["drain_end"] - time.time()))
    duplicates = duplicates_so_far() - await baseline
    reconnects = sum(client.stats.reconnects for client in clients)
    watcher.cancel()
    emit(
        {
            "window_frames": counters.window_frames,
            "measured_received": counters.measured_received,
            "published": counters.published,
            "send_errors": counters.send_errors,
            "duplicates": duplicates,
            "reconnects": reconnects,
            "cpu_s": await worker_cpu,
            "latency": counters.latency.to_json(),
            "ack_latency": counters.ack_latency.to_json(),
        }
    )
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients)), 10)


def main() -> None:
    run_loop(_main())


if __name__ == "__main__":
    main()
