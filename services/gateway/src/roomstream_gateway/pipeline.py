"""Log appends and the tail's XREAD over dedicated pipelined Redis connections (the hot paths).

redis-py spends ~100-200 µs of CPU per command in its pool, timeouts, retry and observability
layers, and a command holds a pooled connection for its whole round trip. The append script is
the gateway's busiest command, so appends go through `AppendPipe` instead: one connection, the
commands of every socket written as soon as they are issued (Redis answers in order), replies
parsed by hiredis. Nothing else changes: the same script (EVALSHA, loaded on NOSCRIPT), the same
keys and arguments (`EventLog`), encoded by hiredis (`pack_command`), the same errors (a lost connection raises redis-py's
`ConnectionError`, one of `REDIS_DOWN_ERRORS`: the command answers `unavailable`; nothing is
retried blindly, so an append is never doubled). The next append reconnects. An error reply that
means "try again" (LOADING while Redis loads its data set after a restart, BUSY, READONLY, ...) is
raised as `roomstream_kit.redis.RedisTryAgainError`, also a ConnectionError: `unavailable`, never
`internal`.

The tail's blocking XREAD gets a connection of its own (`PipedTailRedis`), with a client-side
deadline of BLOCK + `XREAD_GRACE_S` (a silently dead connection is dropped and reconnected).

Used for a single Redis server reached over plain TCP (`redis://`); a Redis Cluster, TLS or a
Unix socket keep redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from roomstream_contracts.streams import APPEND_SCRIPT
from roomstream_kit.redis import AnyRedis, reply_error

CONNECT_TIMEOUT_S = 2.0
APPEND_DEADLINE_S = 10.0
"""An append without a reply by then fails as `unavailable` and its connection is replaced
(a silently dead connection would otherwise hold every append forever)."""
XREAD_GRACE_S = 5.0


def supported(redis_url: str, cluster: bool) -> bool:
    return not cluster and urlsplit(redis_url).scheme == "redis"


def keepalive(transport: asyncio.BaseTransport) -> None:
    """TCP keepalive on a Redis connection of our own (a dead peer is noticed eventually)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: AppendPipe) -> None:
        self.pipe = pipe
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.issued: deque[float] = deque()
        """Loop time at which each waiting command was written (the watchdog's clock)."""
        self.transport: Any = None
        self.lost: BaseException | None = None
        self.outbox: list[bytes] = []
        """Commands issued in this loop iteration, written together by `flush` (one send
        syscall for every socket's commands instead of one each)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses
        keepalive(transport)

    def send(self, packed: bytes) -> None:
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outbox.append(packed)

    def flush(self) -> None:
        out, self.outbox = self.outbox, []
        if out and self.lost is None and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not waiting:  # cannot happen: Redis answers what it was asked, in order
                continue
            fut = waiting.popleft()
            self.issued.popleft()
            if fut.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                fut.set_exception(
                    NoScriptError(message)
                    if message.startswith("NOSCRIPT")
                    else reply_error(message)
                )
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RedisConnectionError(f"connection to redis lost: {exc or 'closed'}")
        self.pipe._lost(self)
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(self.lost)


class AppendPipe:
    """One pipelined connection: EVALSHA of the append script, or any command (`command`)."""

    def __init__(self, redis_url: str, deadline_s: float = APPEND_DEADLINE_S) -> None:
        params = parse_url(redis_url)
        self.deadline_s = deadline_s
        self._watchdog: asyncio.Future[None] | None = None
        self.host = str(params.get("host") or "127.0.0.1")
        self.port = int(params.get("port") or 6379)
        self.db = int(params.get("db") or 0)
        self.username = params.get("username")
        self.password = params.get("password")
        self.sha = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            try:
                return await asyncio.shield(self._connecting)
            finally:
                self._connecting = None
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):  # not wait_for: see `_wait`
                _, proto = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port
                )
        except TimeoutError as exc:
            raise RedisTimeoutError(f"connecting to redis at {self.host}:{self.port}") from exc
        except OSError as exc:
            raise RedisConnectionError(f"connecting to redis: {exc}") from exc
        setup: list[tuple[Any, ...]] = []
        if self.password is not None:
            user = (self.username,) if self.username else ()
            setup.append(("AUTH", *user, self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        futures = [self._issue(proto, cmd) for cmd in setup]
        try:
            for fut in futures:
                await fut
        except BaseException:
            if proto.transport is not None:
                proto.transport.close()
            raise
        if proto.lost is None:
            self._proto = proto
            self._watchdog = asyncio.ensure_future(self._watch(proto))
        return proto

    async def _watch(self, proto: _Protocol) -> None:
        """Replace the connection when its oldest command waits longer than the deadline (a
        silently dead connection would otherwise hold every append forever): its commands fail
        with ConnectionError (`unavailable`), the next one reconnects. Blocking commands with a
        deadline of their own (the tail's XREAD) have a connection of their own."""
        loop = asyncio.get_running_loop()
        while proto.lost is None:
            await asyncio.sleep(1.0)
            stuck = proto.issued and loop.time() - proto.issued[0] > self.deadline_s
            if stuck and proto.transport is not None:
                proto.transport.abort()

    def _lost(self, proto: _Protocol) -> None:
        if self._proto is proto:
            self._proto = None

    def _issue(self, proto: _Protocol, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if proto.lost is not None or proto.transport is None:
            raise proto.lost or RedisConnectionError("not connected to redis")
        # Encoded before it counts as waiting: an argument hiredis refuses (None, a lone
        # surrogate) raises here, and would otherwise take the next command's reply.
        packed = hiredis.pack_command(args)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        proto.waiting.append(fut)
        proto.issued.append(loop.time())
        proto.send(packed)
        return fut

    async def evalsha(self, keys: list[str], args: list[Any]) -> Any:
        proto = await self._connection()
        call = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await self._issue(proto, call)
        except NoScriptError:
            proto = await self._connection()
            return await self._issue(proto, ("EVAL", APPEND_SCRIPT, len(keys), *keys, *args))

    async def command(self, *args: Any, deadline_s: float | None = None) -> Any:
        proto = await self._connection()
        fut = self._issue(proto, args)
        if deadline_s is None:
            return await fut
        return await self._wait(proto, fut, deadline_s, str(args[0]))

    async def batch(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Several commands in one write; their replies in order (hiredis shapes: a hash is a
        flat list, a set a list, a boolean an integer)."""
        proto = await self._connection()
        futures = [self._issue(proto, cmd) for cmd in commands]
        try:
            return [await fut for fut in futures]
        except BaseException:
            for fut in futures:  # the others' errors are this one's (the connection): retrieved
                if fut.done() and not fut.cancelled():
                    fut.exception()
                else:
                    fut.cancel()  # its reply, when it comes, is skipped (`data_received`)
            raise

    async def _wait(
        self, proto: _Protocol, fut: asyncio.Future[Any], deadline_s: float, name: str
    ) -> Any:
        # `asyncio.timeout`, not `wait_for`: on Python 3.11, `wait_for` swallows a cancellation
        # that arrives as the reply does (measured: 18 of 30 cancels of a tail under traffic
        # were lost), and a stop that cancels the tail then waits for the deadline.
        try:
            async with asyncio.timeout(deadline_s):
                return await fut
        except TimeoutError as exc:
            # The reply may still come: this connection's order is lost, drop it.
            if proto.transport is not None:
                proto.transport.abort()
            self._lost(proto)
            raise RedisTimeoutError(f"no reply to {name} within {deadline_s:.1f}s") from exc

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


class PipedScript:
    """The append script over an `AppendPipe`: a `roomstream_kit.eventlog.ScriptRunner`."""

    def __init__(self, pipe: AppendPipe) -> None:
        self.pipe = pipe

    async def __call__(self, keys: list[str], args: list[str | bytes | int]) -> Any:
        return await self.pipe.evalsha(keys, args)


class PipedTailRedis:
    """What `Tail` needs of a Redis client: XREAD over its own `AppendPipe` connection (fields
    as dicts, like redis-py's), XREVRANGE through redis-py."""

    def __init__(self, redis: AnyRedis, redis_url: str) -> None:
        self.redis = redis
        self.pipe = AppendPipe(redis_url, deadline_s=float("inf"))  # XREAD: its own deadline

    async def xrevrange(self, key: str, max: str, min: str, count: int) -> Any:
        return await self.redis.xrevrange(key, max, min, count=count)

    async def xread(self, streams: dict[Any, Any], count: int, block: int) -> Any:
        reply = await self.pipe.command(
            "XREAD",
            "COUNT",
            count,
            "BLOCK",
            block,
            "STREAMS",
            *streams.keys(),
            *streams.values(),
            deadline_s=block / 1000 + XREAD_GRACE_S,
        )
        if not reply:
            return reply
        out = []
        for stream, items in reply:
            entries = []
            for entry_id, fields in items:
                it = iter(fields or ())
                entries.append((entry_id, dict(zip(it, it, strict=True))))
            out.append([stream, entries])
        return out

    async def aclose(self) -> None:
        self.pipe.close()
