"""`LogConsumer` never stalls on one entry: a deterministically failing entry is isolated from its
batch, dead-lettered (stream + count + ack in one step) and the entries after it flow on; a
transient failure (a dependency away) is retried and never dead-lettered; a batch failing longer
than the bound makes the readiness check fail. Real Redis, a real consumer group; the handlers are
the tests' own."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import orjson
import pytest
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id
from roomstream_contracts.streams import FIELD_EVENT, FIELD_KIND, FIELD_ROOM
from roomstream_kit.consumer import LogConsumer, LogEntry
from roomstream_kit.eventlog import EventLog
from roomstream_kit.settings import CommonSettings

from tests.conftest import REDIS_URL
from tests.support.events import envelope
from tests.support.waits import until

GROUP = "dltest"
ROOM = "poison-room"


@pytest.fixture
async def redis(namespace: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def settings_of(namespace: str) -> CommonSettings:
    return CommonSettings(redis_url=REDIS_URL, namespace=namespace, shards=2)


def message(text: str) -> Envelope:
    return envelope(EventKind.MESSAGE, ROOM, "ann", text=text, client_id=new_event_id())


async def run_consumer(
    namespace: str,
    redis: aioredis.Redis,
    handler: Callable[[Sequence[LogEntry]], Awaitable[None]],
    **options: object,
) -> LogConsumer:
    consumer = LogConsumer(
        settings_of(namespace),
        redis,
        group=GROUP,
        consumer="c1",
        handler=handler,
        poll_ms=20,
        max_backoff_s=0.2,
        **options,  # type: ignore[arg-type]
    )
    await consumer.start()
    return consumer


async def dead_letters(redis: aioredis.Redis, namespace: str) -> list[dict[bytes, bytes]]:
    keys = settings_of(namespace).keys
    out: list[dict[bytes, bytes]] = []
    for shard in range(keys.shards):
        out += [fields for _, fields in await redis.xrange(keys.dead_letters(shard))]
    return out


async def test_a_poison_entry_is_dead_lettered_and_later_entries_flow_in_order(
    namespace: str, redis: aioredis.Redis
) -> None:
    log = EventLog(redis, settings_of(namespace).keys)
    handled: list[str] = []
    calls = 0

    async def handler(batch: Sequence[LogEntry]) -> None:
        nonlocal calls
        calls += 1
        texts = [e.envelope.data["text"] for e in batch]
        if "poison" in texts:
            raise ValueError("cannot store this one")  # a data error: deterministic
        handled.extend(texts)

    # The batch is read as one: appended before the consumer starts (drained at start).
    for i in range(40):
        await log.append(message("poison" if i == 17 else f"m{i}"))
    consumer = await run_consumer(namespace, redis, handler)
    try:
        await until(lambda: len(handled) >= 39, "the other 39 entries")
        for i in range(40, 45):  # later entries of the same shard keep flowing
            await log.append(message(f"m{i}"))
        await until(lambda: len(handled) >= 44, "later entries")
    finally:
        await consumer.stop()
    assert handled == [f"m{i}" for i in range(45) if i != 17]  # order kept, nothing twice
    [dead] = await dead_letters(redis, namespace)
    keys = settings_of(namespace).keys
    stream = keys.log(keys.room_shard(ROOM))
    assert dead[b"stream"].decode() == stream
    assert dead[b"group"] == GROUP.encode()
    assert dead[b"error"].startswith(b"ValueError: cannot store this one")
    assert orjson.loads(dead[b"f:" + FIELD_EVENT])["data"]["text"] == "poison"
    assert dead[b"f:" + FIELD_ROOM] == ROOM.encode()
    assert dead[b"f:" + FIELD_KIND] == b"message"
    assert int(dead[b"ts"]) > 0
    count = await redis.hget(keys.dead_letter_counts(keys.room_shard(ROOM)), GROUP)
    assert count == b"1"
    assert (await redis.xpending(stream, GROUP))["pending"] == 0  # all acknowledged
    assert calls < 40  # isolated by halving, not one call per entry


async def test_an_undecodable_entry_is_dead_lettered_with_its_raw_fields(
    namespace: str, redis: aioredis.Redis
) -> None:
    keys = settings_of(namespace).keys
    stream = keys.log(keys.room_shard(ROOM))
    handled: list[str] = []

    async def handler(batch: Sequence[LogEntry]) -> None:
        handled.extend(e.envelope.data["text"] for e in batch)

    consumer = await run_consumer(namespace, redis, handler)
    try:
        await redis.xadd(stream, {"r": ROOM, "k": "message", "e": b"\xff{not json"})
        await EventLog(redis, keys).append(message("after"))
        await until(lambda: handled == ["after"], "the entry after it")
        await until(lambda: _count(redis, keys.dead_letter_counts(keys.room_shard(ROOM))), "dl")
    finally:
        await consumer.stop()
    [dead] = await dead_letters(redis, namespace)
    assert dead[b"f:e"] == b"\xff{not json"  # byte for byte, replayable
    assert dead[b"error"].startswith(b"ValidationError")


async def _count(redis: aioredis.Redis, key: str) -> bool:
    return await redis.hget(key, GROUP) is not None


async def test_a_transient_failure_is_retried_and_never_dead_lettered(
    namespace: str, redis: aioredis.Redis
) -> None:
    """The handler's dependency is "down" (ConnectionError) for several seconds, longer than
    max_attempts retries: nothing is dead-lettered, everything arrives once it is back, and the
    readiness check says stuck meanwhile."""
    log = EventLog(redis, settings_of(namespace).keys)
    down = True
    handled: list[str] = []
    failures = 0

    async def handler(batch: Sequence[LogEntry]) -> None:
        nonlocal failures
        if down:
            failures += 1
            raise ConnectionRefusedError("postgres is away")
        handled.extend(e.envelope.data["text"] for e in batch)

    consumer = await run_consumer(namespace, redis, handler, max_attempts=2, stuck_after_s=0.5)
    try:
        for i in range(10):
            await log.append(message(f"m{i}"))
        await until(lambda: failures >= 6, "several failed attempts")
        await until(lambda: consumer.stuck_reason() is not None, "stuck")
        with pytest.raises(RuntimeError, match="unfinished"):
            await consumer.consumer_progress()
        assert "ConnectionRefusedError" in (consumer.stuck_reason() or "")
        down = False
        await until(lambda: len(handled) == 10, "all entries after the outage")
        await consumer.consumer_progress()  # ready again
    finally:
        await consumer.stop()
    assert handled == [f"m{i}" for i in range(10)]
    assert await dead_letters(redis, namespace) == []


async def test_an_unknown_error_dead_letters_after_max_attempts_only_while_dependencies_answer(
    namespace: str, redis: aioredis.Redis
) -> None:
    """An error that is neither transient nor a data error: the entry is retried; while the probe
    says the dependencies are down it is never dead-lettered; once they answer, it is after
    `max_attempts`."""
    log = EventLog(redis, settings_of(namespace).keys)
    deps_up = False
    attempts = 0
    handled: list[str] = []

    async def probe() -> None:
        if not deps_up:
            raise ConnectionError("down")

    async def handler(batch: Sequence[LogEntry]) -> None:
        nonlocal attempts
        texts = [e.envelope.data["text"] for e in batch]
        if "bad" in texts:
            attempts += 1
            raise RuntimeError("a bug that this entry triggers")
        handled.extend(texts)

    hooked: list[str] = []

    async def hook(entry: LogEntry, exc: BaseException) -> None:
        hooked.append(f"{entry.envelope.data['text']}:{type(exc).__name__}")

    consumer = await run_consumer(
        namespace, redis, handler, max_attempts=3, probe=probe, on_dead_letter=hook
    )
    try:
        await log.append(message("bad"))
        await log.append(message("good"))
        await until(lambda: attempts >= 5, "retries while the dependencies are down")
        assert await dead_letters(redis, namespace) == []
        deps_up = True
        await until(lambda: handled == ["good"], "the entry after it")
    finally:
        await consumer.stop()
    assert hooked == ["bad:RuntimeError"]
    [dead] = await dead_letters(redis, namespace)
    assert dead[b"error"].startswith(b"RuntimeError: a bug")


async def _cli(namespace: str, *args: str) -> list[dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomstream_cli",
        "dead-letters",
        *args,
        env={
            **os.environ,
            "REDIS_URL": REDIS_URL,
            "ROOMSTREAM_NAMESPACE": namespace,
            "ROOMSTREAM_SHARDS": "2",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return [orjson.loads(line) for line in out.splitlines()]


async def test_dead_letters_are_listed_and_replayed_by_the_cli(
    namespace: str, redis: aioredis.Redis
) -> None:
    """`roomstream dead-letters list` shows the entry; once the cause is fixed, `replay` appends
    it again to its shard and the consumer handles it."""
    log = EventLog(redis, settings_of(namespace).keys)
    fixed = False
    handled: list[str] = []

    async def handler(batch: Sequence[LogEntry]) -> None:
        texts = [e.envelope.data["text"] for e in batch]
        if "poison" in texts and not fixed:
            raise ValueError("not yet")
        handled.extend(texts)

    consumer = await run_consumer(namespace, redis, handler)
    try:
        await log.append(message("poison"))
        await log.append(message("next"))
        await until(lambda: handled == ["next"], "the entry after the poison")
        [letter] = await _cli(namespace, "list")
        assert letter["group"] == GROUP and str(letter["error"]).startswith("ValueError")
        assert orjson.loads(str(letter["fields"]["e"]))["data"]["text"] == "poison"  # type: ignore[index]
        fixed = True
        [replayed] = await _cli(namespace, "replay", str(letter["id"]))
        assert replayed["stream"] == letter["stream"]
        await until(lambda: handled == ["next", "poison"], "the replayed entry")
        assert await _cli(namespace, "list") == []
    finally:
        await consumer.stop()
