"""`roomstream bench history`: benchmarks of the history service (not tests).

- `persist`: events/s from a pre-filled log into Postgres, idempotently, by one history process
  (the consumer in this process, as in production), and the write strategies side by side
  (the service's JSON-array insert, the former `unnest` of 8 arrays, COPY into a temp table +
  INSERT).
- `replay`: events/s served by the HTTP API paging forward (`after=`, limit 200).
- `reconnect`: N clients reconnecting at once through two gateways, each missing M messages that
  are no longer in the Redis recent buffer: time until every client has all of them.

Uses the local Redis and Postgres (`REDIS_URL`, `DATABASE_URL` pointing at any database of the
server), a random namespace and a scratch database, both removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_history.app import HistoryService, tune_gc
from roomstream_history.model import Rows, to_rows
from roomstream_history.settings import HistorySettings
from roomstream_history.store import HistoryStore
from roomstream_kit.auth import issue_token
from roomstream_kit.eventlog import EventLog, RoomCheck
from roomstream_kit.postgres import create_pool, ensure_database
from roomstream_kit.redis import connect, text
from roomstream_kit.rooms import seed_room
from roomstream_kit.serve import run_loop
from roomstream_kit.telemetry import setup_telemetry

from .local import free_port, remove_scratch, wait_http

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _db_url(name: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def scratch() -> AsyncIterator[HistorySettings]:
    """Settings for a fresh namespace and database; both are removed at the end."""
    ns = f"bench{uuid.uuid4().hex[:8]}"
    db = f"rs_bench_{uuid.uuid4().hex[:8]}"
    settings = HistorySettings(
        namespace=ns,
        database_url=_db_url(db),
        redis_url=REDIS_URL,
        node_id="bench-history",
        retention_max_age_s=0,
    )
    await ensure_database(settings.database_url)
    try:
        yield settings
    finally:
        redis = connect(settings)
        try:
            await remove_scratch(redis, ns, ADMIN_URL, db)
        finally:
            await redis.aclose()


def _message(room: str, seq: int, user: str, *, traced: bool = False) -> dict[str, Any]:
    env: dict[str, Any] = {
        "seq": seq,
        "v": 1,
        "id": new_event_id(),
        "kind": "message",
        "room": room,
        "user": user,
        "ts": now_ms(),
        "data": {"text": f"message {seq} of {room} " + "x" * 40, "client_id": new_event_id()},
    }
    if traced:
        # What the gateway's `send` puts in every envelope (its span is sampled): the consumer
        # then starts one `history.persist` span per event, parented on it.
        env["trace"] = {"traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"}
    return env


async def fill_log(
    settings: HistorySettings, rooms: list[str], per_room: int, *, traced: bool = False
) -> int:
    """Append `per_room` messages to every room straight into the shard streams (pipelined)."""
    keys = settings.keys
    redis = connect(settings)
    seqs = dict.fromkeys(rooms, 0)
    total = 0
    try:
        for _ in range(per_room):
            async with redis.pipeline(transaction=False) as pipe:
                for room in rooms:
                    seqs[room] += 1
                    env = _message(room, seqs[room], "bench", traced=traced)
                    pipe.xadd(
                        keys.log(keys.room_shard(room)),
                        {"r": room, "k": "message", "e": orjson.dumps(env)},
                    )
                    pipe.hset(keys.seq(keys.room_shard(room)), room, seqs[room])
                await pipe.execute()
            total += len(rooms)
    finally:
        await redis.aclose()
    return total


async def _until_count(pool: asyncpg.Pool, total: int) -> None:
    """Poll until Postgres holds `total` events."""
    while True:
        if int(await pool.fetchval("SELECT count(*) FROM history_events")) >= total:
            return
        await asyncio.sleep(0.05)


async def _until_acked(settings: HistorySettings, group: str) -> None:
    """Poll (cheaply: `XINFO GROUPS` per shard) until `group` has read and acknowledged every
    entry of every shard. The consumer acknowledges only after the handler committed, so then
    Postgres holds every event. (Polling `count(*)` instead would cost Postgres, which shares the
    2 cores with the consumer, a scan of the growing table every few ms.)"""
    redis = connect(settings)
    try:
        while True:
            done = True
            for stream in settings.keys.all_logs():
                groups: Any = await redis.xinfo_groups(stream)
                info = next((g for g in groups if text(g["name"]) == group), None)
                if info is None or info["pending"]:
                    done = False
                    break
                last: Any = await redis.xrevrange(stream, count=1)
                if last and text(last[0][0]) != text(info["last-delivered-id"]):
                    done = False
                    break
            if done:
                return
            await asyncio.sleep(0.02)
    finally:
        await redis.aclose()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def bench_persist(
    events: int, rooms_n: int, *, traced: bool = True, repeat: int = 1, strategies: bool = True
) -> dict[str, float]:
    """Log → Postgres by the production consumer and handler, in this process.

    The clock starts once the service is up (database created and migrated) and its consumer
    starts in the background; it stops when the `history` group has acknowledged every entry.
    CPU is this process's (user + system) over the same interval: the consumer, the handler, the
    span per traced event, asyncpg; Redis and Postgres are other processes.
    """
    rooms = [f"room-{i}" for i in range(rooms_n)]
    rates: list[float] = []
    cpus: list[float] = []
    out: dict[str, float] = {}
    for run in range(repeat):
        async with scratch() as settings:
            total = await fill_log(settings, rooms, events // rooms_n, traced=traced)
            svc = HistoryService(settings)
            load = _load()
            t0, c0 = time.perf_counter(), time.process_time()
            await svc.start()
            await _until_acked(settings, "history")
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert svc.pool is not None
            stored = int(await svc.pool.fetchval("SELECT count(*) FROM history_events"))
            await svc.stop()
            assert stored == total, (stored, total)
            rate = total / elapsed
            rates.append(rate)
            cpus.append(cpu / total * 1e6)
            print(
                f"persist run {run + 1}: {total} events ({'traced' if traced else 'untraced'})"
                f" in {elapsed:.2f}s = {rate:,.0f} events/s (consumer → PG),"
                f" {cpu / total * 1e6:.1f} µs CPU/event in the process, load {load}"
            )
            if strategies and run == repeat - 1:
                out.update(await bench_strategies(settings, rooms))
    if repeat > 1:
        print(
            f"persist median of {repeat}: {statistics.median(rates):,.0f} events/s"
            f" (min {min(rates):,.0f}, max {max(rates):,.0f}),"
            f" {statistics.median(cpus):.1f} µs CPU/event"
        )
    return {
        "persist_events_per_s": statistics.median(rates),
        "persist_cpu_us_per_event": statistics.median(cpus),
        **out,
    }


_COPY_INSERT = """
INSERT INTO history_events (room, seq, id, kind, user_id, ts, data, target_seq)
SELECT room, seq, id, kind, user_id, ts, data::jsonb, target_seq FROM staging
ON CONFLICT DO NOTHING
"""

_UNNEST_INSERT = """
INSERT INTO history_events (room, seq, id, kind, user_id, ts, data, target_seq)
SELECT r, s, i, k, u, t, d::jsonb, g
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $7::text[], $8::bigint[]) AS x(r, s, i, k, u, t, d, g)
ON CONFLICT DO NOTHING
"""
"""The service's insert before the JSON-array one: 8 array parameters."""


def _columns(rows: Rows) -> list[list[Any]]:
    """Rows as 8 columns, `data` as JSON text (the `unnest` and COPY variants take these)."""
    cols: list[list[Any]] = [[] for _ in range(8)]
    for row in rows.rows:
        for i, value in enumerate(row):
            cols[i].append(orjson.dumps(value).decode() if i == 6 else value)
    return cols


async def bench_strategies(settings: HistorySettings, rooms: list[str]) -> dict[str, float]:
    """The store's write alone, fresh rows in batches of 1000, one connection: the service's
    JSON-array insert (`HistoryStore.persist`), the former `unnest` of 8 arrays, and COPY into a
    temp table + INSERT; then the service's write of the same batches again (all duplicates:
    what a redelivery costs). CPU is this process's per row, the encoding of the batch included
    (the rows are built beforehand)."""
    pool = await create_pool(settings.database_url, max_size=4)
    store = HistoryStore(pool)
    from roomstream_contracts.codec import decode_envelope

    batches: list[Rows] = []
    for b in range(120):
        envs = [
            decode_envelope(
                orjson.dumps(_message(rooms[i % len(rooms)], 10**6 + b * 1000 + i, "s"))
            )
            for i in range(1000)
        ]
        batches.append(to_rows(envs))

    async def json_array(rows: Rows) -> None:
        await store.persist(rows)

    async def unnest(rows: Rows) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_UNNEST_INSERT, *_columns(rows))

    async def copy(rows: Rows) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS staging (room text, seq bigint, id text,"
                " kind text, user_id text, ts bigint, data text, target_seq bigint)"
                " ON COMMIT DELETE ROWS"
            )
            await conn.copy_records_to_table("staging", records=zip(*_columns(rows), strict=True))
            await conn.execute(_COPY_INSERT)

    out: dict[str, float] = {}

    async def measure(name: str, write: Any, part: list[Rows]) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        for rows in part:
            await write(rows)
        n = sum(len(rows) for rows in part)
        out[f"{name}_rows_per_s"] = n / (time.perf_counter() - t0)
        out[f"{name}_cpu_us_per_row"] = (time.process_time() - c0) / n * 1e6

    try:
        await measure("json_array", json_array, batches[:40])
        await measure("unnest", unnest, batches[40:80])
        await measure("copy", copy, batches[80:])
        await measure("json_array_duplicates", json_array, batches[:40])
    finally:
        await pool.close()
    print(
        "store write, batches of 1000: JSON array (service) {json_array_rows_per_s:,.0f} rows/s"
        " ({json_array_cpu_us_per_row:.1f} µs CPU/row), unnest {unnest_rows_per_s:,.0f}"
        " ({unnest_cpu_us_per_row:.1f}), COPY+INSERT {copy_rows_per_s:,.0f}"
        " ({copy_cpu_us_per_row:.1f}), replayed duplicates {json_array_duplicates_rows_per_s:,.0f}"
        " rows/s".format(**out)
    )
    return out


def _spawn(module: str, settings: HistorySettings, port: int, extra: dict[str, str]) -> Any:
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.database_url,
        "ROOMSTREAM_NAMESPACE": settings.namespace,
        "ROOMSTREAM_PORT": str(port),
        "ROOMSTREAM_LOG_LEVEL": "WARNING",
        "ROOMSTREAM_DEV_MODE": "1",  # a local benchmark: the development secret is fine
        **extra,
    }
    return subprocess.Popen([sys.executable, "-m", module], env=env)


async def bench_replay(events: int, rooms_n: int) -> dict[str, float]:
    rooms = [f"room-{i}" for i in range(rooms_n)]
    async with scratch() as settings:
        total = await fill_log(settings, rooms, events // rooms_n)
        port = free_port()
        proc = _spawn("roomstream_history", settings, port, {})
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_http(f"{url}/readyz", proc=proc)
            pool = await create_pool(settings.database_url, max_size=2)
            await _until_count(pool, total)
            await pool.close()
            token = issue_token(settings.jwt_secret, "bench", role="service")
            got = 0
            sem = asyncio.Semaphore(8)

            async def replay(http: httpx.AsyncClient, room: str) -> int:
                n, after, more = 0, 0, True
                while more:
                    async with sem:
                        r = await http.get(
                            f"{url}/rooms/{room}/messages", params={"after": after, "limit": 200}
                        )
                    body = r.json()
                    n += len(body["events"])
                    more = body["more"]
                    if body["events"]:
                        after = body["events"][-1]["seq"]
                return n

            headers = {"authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(headers=headers, timeout=30) as http:
                t0 = time.perf_counter()
                counts = await asyncio.gather(*(replay(http, r) for r in rooms))
                elapsed = time.perf_counter() - t0
            got = sum(counts)
            assert got == total, (got, total)
        finally:
            proc.terminate()
            proc.wait(20)
    rate = got / elapsed
    print(f"replay: {got} events over HTTP in {elapsed:.2f}s = {rate:,.0f} events/s")
    return {"replay_events_per_s": rate}


async def bench_reconnect(clients: int, missed: int, rooms_n: int) -> dict[str, float]:
    import websockets

    async with scratch() as settings:
        hport, g1, g2 = free_port(), free_port(), free_port()
        extra = {
            "ROOMSTREAM_RECENT_PER_ROOM": "20",
            "ROOMSTREAM_SEND_RATE_PER_S": "100000",
            "ROOMSTREAM_SEND_BURST": "100000",
            "ROOMSTREAM_HISTORY_URL": f"http://127.0.0.1:{hport}",
        }
        procs = [
            _spawn("roomstream_history", settings, hport, extra),
            _spawn("roomstream_gateway", settings, g1, extra),
            _spawn("roomstream_gateway", settings, g2, extra),
        ]
        redis = connect(settings)
        try:
            for port, proc in zip((hport, g1, g2), procs, strict=True):
                await wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
            rooms = [f"room-{i}" for i in range(rooms_n)]
            users = [f"user-{i}" for i in range(clients)]
            for i, room in enumerate(rooms):
                members = users[i::rooms_n]
                await seed_room(redis, settings.keys, room, members[0], members=members)
            # Everyone "was away": the rooms get `missed` messages each, beyond the recent buffer.
            since = {room: 1 for room in rooms}
            recent_buffer_fill = await fill_after(settings, rooms, missed)
            await _wait_persisted(settings, hport, rooms, recent_buffer_fill)
            done: list[float] = []
            retries = 0

            async def one(i: int, t0: float) -> None:
                """A client as a real one behaves: reconnect with backoff when told to (1013)."""
                nonlocal retries
                for attempt in range(20):
                    try:
                        await attempt_one(i, t0)
                        return
                    except (websockets.ConnectionClosedError, _Unavailable) as exc:
                        if isinstance(exc, websockets.ConnectionClosedError) and (
                            exc.rcvd is None or exc.rcvd.code not in (1012, 1013)
                        ):
                            raise
                        retries += 1
                        await asyncio.sleep(0.1 * 2 ** min(attempt, 4) * (0.5 + random.random()))
                raise RuntimeError("client gave up")

            async def attempt_one(i: int, t0: float) -> None:
                user = users[i]
                room = rooms[i % rooms_n]
                token = issue_token(settings.jwt_secret, user)
                url = f"ws://127.0.0.1:{(g1, g2)[i % 2]}/ws"
                async with websockets.connect(
                    url,
                    additional_headers={"authorization": f"Bearer {token}"},
                    open_timeout=120,
                    max_size=2**24,
                ) as ws:
                    await ws.recv()  # welcome
                    await ws.send(
                        orjson.dumps({"type": "join", "room": room, "since": since[room]})
                    )
                    seen = 0
                    async for raw in ws:
                        msg = orjson.loads(raw)
                        if msg["type"] == "event" and msg.get("seq", 0) > since[room]:
                            seen += 1
                            if seen == missed:
                                break
                        elif msg["type"] == "error":
                            if msg.get("code") == "unavailable":
                                raise _Unavailable(msg["message"])
                            raise RuntimeError(msg)
                done.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i, t0) for i in range(clients)))
            elapsed = time.perf_counter() - t0
        finally:
            await redis.aclose()
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
    done.sort()
    print(
        f"reconnect: {clients} clients × {missed} missed events all caught up in {elapsed:.2f}s"
        f" (p50 {statistics.median(done):.2f}s, p99 {done[int(len(done) * 0.99) - 1]:.2f}s,"
        f" {retries} retries after 1013 / unavailable)"
    )
    return {"reconnect_all_caught_up_s": elapsed, "reconnect_retries": float(retries)}


class _DiscardSpans(SpanExporter):
    """An exporter that drops what it gets: the cost of recorded spans without a collector."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Unavailable(Exception):
    """The gateway answered `unavailable`: retry later, as a client does."""


async def fill_after(settings: HistorySettings, rooms: list[str], per_room: int) -> dict[str, int]:
    """Append `per_room` messages to each (already created) room through the append script."""
    redis = connect(settings)
    log = EventLog(redis, settings.keys, recent_per_room=20)
    top: dict[str, int] = {}
    try:

        async def room_msgs(room: str) -> None:
            for i in range(per_room):
                r = await log.append(message_envelope(room, f"m{i}"), room_check=RoomCheck.EXISTS)
                top[room] = r.seq or 0

        await asyncio.gather(*(room_msgs(r) for r in rooms))
    finally:
        await redis.aclose()
    return top


def message_envelope(room: str, body: str) -> Envelope:
    return Envelope(
        id=new_event_id(),
        kind=EventKind.MESSAGE,
        room=room,
        user="bench-sender",
        ts=now_ms(),
        data={"text": body, "client_id": new_event_id()},
    )


async def _wait_persisted(
    settings: HistorySettings, port: int, rooms: list[str], top: dict[str, int]
) -> None:
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        while True:
            n = await pool.fetchval(
                "SELECT count(*) FROM history_events WHERE room = ANY($1::text[])", rooms
            )
            if int(n) >= sum(top.values()):
                return
            await asyncio.sleep(0.1)
    finally:
        await pool.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("faststream").setLevel(logging.WARNING)
    # As in the service process: the SDK tracer provider (no exporter), so spans cost what they
    # cost in production.
    setup_telemetry(
        "history",
        "bench-history",
        span_processor=BatchSpanProcessor(_DiscardSpans()) if args.export_spans else None,
    )
    if not args.default_gc:
        tune_gc()  # as `python -m roomstream_history` does

    async def main() -> None:
        results: dict[str, float] = {}
        if "persist" in args.which:
            results.update(
                await bench_persist(
                    args.events,
                    args.rooms,
                    traced=not args.untraced,
                    repeat=args.repeat,
                    strategies=not args.no_strategies,
                )
            )
        if "replay" in args.which:
            results.update(await bench_replay(args.events // 2, args.rooms))
        if "reconnect" in args.which:
            results.update(await bench_reconnect(args.clients, args.missed, min(50, args.clients)))
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())

    run_loop(main())
    return 0
