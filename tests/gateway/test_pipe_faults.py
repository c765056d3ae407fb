"""Faults on the gateway's pipelined connection (`AppendPipe`): replies stay with the command that
asked for them when a command cannot be encoded, errors, or is cancelled mid-batch, and when the
connection is lost between `send` and `flush`."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from roomstream_gateway.pipeline import AppendPipe

from tests.conftest import REDIS_URL


async def _values(namespace: str, n: int) -> list[str]:
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [f"{namespace}:v{i}" for i in range(n)]
        for i, key in enumerate(keys):
            await client.set(key, f"value-{i}")
        await client.hset(f"{namespace}:hash", "f", "1")
        return keys
    finally:
        await client.aclose()


async def test_an_unencodable_argument_does_not_shift_later_replies(namespace: str) -> None:
    """A command hiredis cannot encode (None, a lone surrogate) fails alone: it is never counted
    as waiting for a reply, so the next commands get their own replies, not their
    predecessor's."""
    keys = await _values(namespace, 3)
    pipe = AppendPipe(REDIS_URL)
    try:
        with pytest.raises(TypeError):
            await pipe.batch([("GET", keys[0]), ("GET", None)])
        with pytest.raises(UnicodeEncodeError):
            await pipe.command("GET", "\ud800")
        got = await asyncio.wait_for(pipe.batch([("GET", keys[1]), ("GET", keys[2])]), 3)
        assert got == [b"value-1", b"value-2"]
        assert await asyncio.wait_for(pipe.command("GET", keys[0]), 3) == b"value-0"
    finally:
        pipe.close()


async def test_an_error_reply_mid_batch_keeps_the_order(namespace: str) -> None:
    """WRONGTYPE on one command of a batch raises from that batch only; batches interleaved
    with it (50 of them, every other one failing) each get their own replies."""
    keys = await _values(namespace, 3)
    h = f"{namespace}:hash"
    pipe = AppendPipe(REDIS_URL)
    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await pipe.batch([("GET", keys[0]), ("GET", h), ("GET", keys[1])])

        async def one(i: int) -> list[object] | str:
            cmds: list[tuple[object, ...]] = [("GET", keys[i % 3])]
            if i % 2:
                cmds.append(("SISMEMBER", h, "x"))  # WRONGTYPE
            cmds.append(("GET", keys[(i + 1) % 3]))
            try:
                return await pipe.batch(cmds)
            except ResponseError:
                return "wrongtype"

        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(50))), 5)
        for i, got in enumerate(results):
            if i % 2:
                assert got == "wrongtype"
            else:
                assert got == [f"value-{i % 3}".encode(), f"value-{(i + 1) % 3}".encode()]
    finally:
        pipe.close()


async def test_a_cancelled_batch_leaves_its_replies_behind(namespace: str) -> None:
    """A batch cancelled while one of its commands blocks: its later replies are skipped, the
    next batch on the same connection gets its own."""
    keys = await _values(namespace, 2)
    pipe = AppendPipe(REDIS_URL)
    try:
        task = asyncio.ensure_future(
            pipe.batch([("GET", keys[0]), ("BLPOP", f"{namespace}:never", 1), ("GET", keys[0])])
        )
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(pipe.batch([("GET", keys[1])]), 5) == [b"value-1"]
    finally:
        pipe.close()


async def test_lost_between_send_and_flush(namespace: str) -> None:
    """The connection lost after a command was queued (`send`) and before it was written
    (`flush`): the command fails with ConnectionError, the next one reconnects."""
    keys = await _values(namespace, 1)
    pipe = AppendPipe(REDIS_URL)
    try:
        proto = await pipe._connection()
        fut = pipe._issue(proto, ("GET", keys[0]))
        assert proto.outbox  # queued, not written yet
        proto.transport.abort()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(fut, 3)
        assert await asyncio.wait_for(pipe.batch([("GET", keys[0])]), 3) == [b"value-0"]
    finally:
        pipe.close()


async def test_nul_and_10kb_arguments_are_binary_safe(namespace: str) -> None:
    """A key or member with U+0000 and 10 kB long (ids are refused long before, but the
    connection must not care): the batch reads the same as redis-py, in order."""
    client = Redis.from_url(REDIS_URL)
    big = f"{namespace}:" + "u\x00" * 5000
    pipe = AppendPipe(REDIS_URL)
    try:
        await client.set(big, "big")
        await client.sadd(f"{namespace}:set", big)
        got = await asyncio.wait_for(
            pipe.batch(
                [
                    ("GET", big),
                    ("SISMEMBER", f"{namespace}:set", big),
                    ("SISMEMBER", f"{namespace}:set", big + "x"),
                    ("GET", big.encode()),
                ]
            ),
            3,
        )
        assert got == [b"big", 1, 0, b"big"]
    finally:
        pipe.close()
        await client.aclose()
