"""The gateway's background tasks: the tail survives unexpected errors, `/readyz` answers 503
once an essential task has ended, and the node record advertises a reachable address."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import orjson
import pytest
from roomstream_contracts.streams import StreamKeys
from roomstream_gateway.app import Gateway
from roomstream_gateway.http import HttpRoutes
from roomstream_gateway.hub import Hub
from roomstream_gateway.metrics import GatewayMetrics
from roomstream_gateway.settings import GatewaySettings
from roomstream_gateway.tail import Tail
from websockets.datastructures import Headers
from websockets.http11 import Request

from tests.conftest import REDIS_URL


class FlakyRedis:
    """xread: an unexpected error, then one batch per call from `batches`, then blocks."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches
        self.calls = 0

    async def xread(self, streams: dict[str, str], count: int, block: int) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("a reply redis-py could not parse")
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(3600)
        return None


class FlakyHub(Hub):
    """The gateway's hub whose `deliver` fails on the first batch and records the others (the
    tail hands batches over through the hub's `deliver_counted`)."""

    def __init__(self) -> None:
        super().__init__(max_buffer_bytes=1 << 20, on_slow=lambda _: None)
        self.batches: list[list[dict[bytes, bytes]]] = []
        self.failed = False

    def deliver(self, entries: list[dict[bytes, bytes]]) -> tuple[int, int, list[int]]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in delivery")
        self.batches.append(list(entries))
        return len(entries), len(entries), [0] * len(entries)


def _entry(n: int) -> dict[bytes, bytes]:
    return {b"r": b"main", b"k": b"message", b"e": orjson.dumps({"n": n})}


async def test_tail_survives_read_and_delivery_errors(caplog: pytest.LogCaptureFixture) -> None:
    keys = StreamKeys(namespace="tailtest", shards=1)
    log_key = keys.log(0)
    redis = FlakyRedis(
        [
            [[log_key.encode(), [(b"1-0", _entry(1))]]],  # the hub fails on this batch
            [[log_key.encode(), [(b"2-0", _entry(2)), (b"3-0", _entry(3))]]],
        ]
    )
    hub = FlakyHub()
    tail = Tail(redis, keys, hub, GatewayMetrics(), block_ms=10, count=10)  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR)
    task = asyncio.create_task(tail.run())
    for _ in range(200):
        if hub.batches:
            break
        await asyncio.sleep(0.01)
    assert not task.done(), task
    assert [orjson.loads(e[b"e"])["n"] for e in hub.batches[0]] == [2, 3]
    assert tail.ids[log_key] == "3-0"  # went on from the next id after the failed batch
    assert "tail: read failed" in caplog.text
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _readyz() -> Request:
    return Request("/readyz", Headers())


@pytest.mark.parametrize("delivery", ["routed", "tail"])
async def test_readyz_is_503_when_an_essential_task_ended(namespace: str, delivery: str) -> None:
    gw = Gateway(
        GatewaySettings(redis_url=REDIS_URL, namespace=namespace, port=0, delivery=delivery)
    )
    routes = HttpRoutes(gw.settings, gw.ready)

    async def feed_dies() -> None:
        raise RuntimeError("boom")

    if gw.router is not None:
        gw.router.run = feed_dies  # type: ignore[method-assign]
    else:
        gw.tail.run = feed_dies  # type: ignore[method-assign]
    try:
        assert await gw.ready() is None  # nothing started yet, Redis answers
        gw.start_background()
        await asyncio.sleep(0.05)
        assert not gw.essential["heartbeat"].done()
        why = f"{'router' if delivery == 'routed' else 'tail'} task is not running"
        assert await gw.ready() == why
        response = await routes(None, _readyz())  # type: ignore[arg-type]
        assert response is not None and response.status_code == 503
        assert why.encode() in response.body
    finally:
        await gw.stop_background()
        await gw.heartbeat.stop(deregister=True)
        await gw.upstream.aclose()
        await gw.redis.aclose()
        await gw.tail_redis.aclose()


@pytest.mark.parametrize("delivery", ["routed", "tail"])
async def test_readyz_is_200_while_the_tasks_run(namespace: str, delivery: str) -> None:
    gw = Gateway(
        GatewaySettings(redis_url=REDIS_URL, namespace=namespace, port=0, delivery=delivery)
    )
    try:
        if gw.router is not None:
            await gw.router.start()
        else:
            await gw.tail.seek_end()
        gw.start_background()
        await asyncio.sleep(0.05)
        response = await HttpRoutes(gw.settings, gw.ready)(None, _readyz())  # type: ignore[arg-type]
        assert response is not None and response.status_code == 200
    finally:
        await gw.stop_background()
        await gw.heartbeat.stop(deregister=True)
        await gw.upstream.aclose()
        await gw.redis.aclose()
        await gw.tail_redis.aclose()


def test_advertised_address(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ROOMSTREAM_HOST", "ROOMSTREAM_ADVERTISE_HOST"):
        monkeypatch.delenv(var, raising=False)
    assert GatewaySettings(host="127.0.0.1").advertised_host() == "127.0.0.1"
    assert GatewaySettings(host="0.0.0.0").advertised_host() == socket.gethostname()
    assert GatewaySettings(host="::").advertised_host() == socket.gethostname()
    monkeypatch.setenv("ROOMSTREAM_ADVERTISE_HOST", "gateway-1")
    settings = GatewaySettings(host="0.0.0.0", port=8000)
    assert settings.advertised_host() == "gateway-1"
    assert Gateway(settings).heartbeat.address == "ws://gateway-1:8000/ws"
    monkeypatch.setenv("ROOMSTREAM_ADVERTISE_HOST", "fd00::1")
    assert Gateway(GatewaySettings(port=8001)).heartbeat.address == "ws://[fd00::1]:8001/ws"


async def test_pipe_matches_redis_py_and_recovers(namespace: str) -> None:
    """The pipelined connection (appends, tail XREAD): same replies as redis-py, NOSCRIPT
    loads the script, a lost connection fails its pending commands and the next one
    reconnects."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from roomstream_gateway.pipeline import AppendPipe, PipedTailRedis

    gw = Gateway(GatewaySettings(redis_url=REDIS_URL, namespace=namespace, port=0))
    key = f"{namespace}:pipe-test"
    try:
        await gw.redis.xadd(key, {"a": "1", "b": "2"})
        await gw.redis.xadd(key, {"a": "3"})
        tail_redis = PipedTailRedis(gw.redis, REDIS_URL)
        ours = await tail_redis.xread({key: "0-0"}, count=10, block=10)
        theirs = await gw.redis.xread({key: "0-0"}, count=10, block=10)
        assert ours == [[k, list(map(tuple, v))] for k, v in theirs]
        assert await tail_redis.xread({key: "$"}, count=10, block=10) is None
        await tail_redis.aclose()

        pipe = AppendPipe(REDIS_URL)
        pipe.sha = "0" * 40  # as if the script cache had been flushed: NOSCRIPT, then EVAL
        keys = [key, f"{key}:x", f"{key}:y", f"{key}:z"]
        reply = await pipe.evalsha(keys, ["", "typing", b"{}", "live", "", "", 10, "id", "", ""])
        assert reply[0] == b"ok"
        fut = pipe._issue(await pipe._connection(), ("BLPOP", f"{key}:never", 5))
        assert pipe._proto is not None
        pipe._proto.transport.abort()
        with pytest.raises(RedisConnectionError):
            await fut
        assert await pipe.command("PING") == b"PONG"  # reconnected
        with pytest.raises(RedisTimeoutError):  # silently stuck: dropped after the deadline
            await pipe.command("BLPOP", f"{key}:never", 5, deadline_s=0.1)
        assert await pipe.command("PING") == b"PONG"
        pipe.close()

        stuck = AppendPipe(REDIS_URL, deadline_s=0.2)  # the watchdog replaces a stuck connection
        fut = stuck._issue(await stuck._connection(), ("BLPOP", f"{key}:never", 5))
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(fut, 3)
        assert await stuck.command("PING") == b"PONG"
        stuck.close()
    finally:
        await gw.redis.delete(key)
        await gw.redis.aclose()


async def test_batch_reads_agree_with_redis_py_and_fail_together(namespace: str) -> None:
    """The connect path's reads (`BatchRunner`): the pipelined connection's replies read the same
    as redis-py's through `as_mapping` / `bool` / iteration, in order, many batches interleaved;
    a lost connection fails every command of a batch, and the next batch reconnects."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from roomstream_gateway.pipeline import AppendPipe
    from roomstream_kit.redis import as_mapping, redis_batch

    gw = Gateway(GatewaySettings(redis_url=REDIS_URL, namespace=namespace, port=0))
    h, s, g = f"{namespace}:bh", f"{namespace}:bs", f"{namespace}:bg"
    pipe = AppendPipe(REDIS_URL)
    try:
        await gw.redis.hset(h, mapping={"a": "1", "b": "\x00two"})
        await gw.redis.sadd(s, "x", "y")
        await gw.redis.set(g, "v")
        reads = [
            ("HGETALL", h),
            ("SMEMBERS", s),
            ("SISMEMBER", s, "x"),
            ("SISMEMBER", s, "nope"),
            ("HEXISTS", h, "a"),
            ("GET", g),
            ("GET", f"{namespace}:missing"),
            ("HGETALL", f"{namespace}:missing"),
        ]
        theirs = await redis_batch(gw.redis)(reads)
        many = await asyncio.gather(*(pipe.batch(reads) for _ in range(50)))
        for ours in many:
            assert as_mapping(ours[0]) == as_mapping(theirs[0]) == {b"a": b"1", b"b": b"\x00two"}
            assert set(ours[1]) == set(theirs[1]) == {b"x", b"y"}
            assert [bool(r) for r in ours[2:5]] == [bool(r) for r in theirs[2:5]]
            assert [bool(r) for r in ours[2:5]] == [True, False, True]
            assert ours[5:7] == theirs[5:7] == [b"v", None]
            assert as_mapping(ours[7]) == as_mapping(theirs[7]) == {}

        batch = asyncio.ensure_future(pipe.batch([("BLPOP", f"{namespace}:never", 5), ("PING",)]))
        await asyncio.sleep(0.1)
        assert pipe._proto is not None
        pipe._proto.transport.abort()
        with pytest.raises(RedisConnectionError):
            await batch
        assert await pipe.batch([("PING",), ("GET", g)]) == [b"PONG", b"v"]  # reconnected
    finally:
        pipe.close()
        await gw.redis.delete(h, s, g)
        await gw.redis.aclose()
