"""Redis clients: one factory for a single server or a Redis Cluster, bytes responses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .settings import CommonSettings

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

AnyRedis: TypeAlias = "Redis | RedisCluster"

REDIS_DOWN_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors that mean Redis is unreachable right now (answer `unavailable`, retry later).

Redis can also be reachable and still answer "not now" (an error reply while it loads its data
set, runs a long script, fails over, ...): `redis_unavailable` is the one test for both."""

TRY_AGAIN_REPLIES: frozenset[str] = frozenset(
    {
        "LOADING",  # loading the data set (AOF / RDB) after a restart
        "BUSY",  # a script or function is running past its time limit
        "MASTERDOWN",  # a replica lost its master (replica-serve-stale-data no)
        "TRYAGAIN",  # cluster: a multi-key command during resharding
        "CLUSTERDOWN",  # cluster: a slot is not served
        "READONLY",  # a write reached a replica (a failover moved the master)
        "NOREPLICAS",  # min-replicas-to-write not met
        "MISCONF",  # writes refused until a failed RDB save succeeds
        "OOM",  # maxmemory reached: a write succeeds again once memory is freed
        "UNBLOCKED",  # a blocking read was released by a role change
    }
)
"""First words of the Redis error replies that mean "the server cannot do it now; try again"
(as opposed to a bad command, a wrong type or a script bug, which are internal errors)."""

_TRY_AGAIN_TYPES: tuple[type[Exception], ...] = (
    BusyLoadingError,  # already a ConnectionError; listed for clarity
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ClusterError,  # the cluster client gave up redirecting / retrying
    SlotNotCoveredError,
)
"""redis-py's classes for such replies (its parser strips the first word from the message)."""


class RedisTryAgainError(RedisConnectionError):
    """An error reply of `TRY_AGAIN_REPLIES` from a client of our own (the gateway's pipelined
    connection). A `ConnectionError`, so every `except REDIS_DOWN_ERRORS` treats it as an outage."""


def try_again_reply(message: str) -> bool:
    """Whether a Redis error reply (its text, e.g. "LOADING Redis is loading ...") means retry.

    redis-py prefixes errors raised inside a pipeline ("Command # 1 (...) of pipeline caused
    error: BUSY ..."); the reply proper follows that prefix.
    """
    _, marker, rest = message.partition("caused error: ")
    reply = rest if marker else message
    return reply.lstrip().split(" ", 1)[0] in TRY_AGAIN_REPLIES


def redis_unavailable(exc: BaseException) -> bool:
    """The one classification of Redis failures: True when the operation may succeed if retried
    later (Redis unreachable, timed out, or answering a "try again" error such as LOADING), so
    the caller answers `unavailable` (HTTP 503) rather than `internal`."""
    if isinstance(exc, REDIS_DOWN_ERRORS + _TRY_AGAIN_TYPES):
        return True
    if isinstance(exc, ResponseError | RedisClusterException):
        return try_again_reply(str(exc))
    return False


def reply_error(message: str) -> Exception:
    """The exception for a Redis error reply parsed by a client of our own: `RedisTryAgainError`
    (a ConnectionError, so `unavailable`) for a "try again" reply, else a plain ResponseError."""
    if try_again_reply(message):
        return RedisTryAgainError(message)
    return ResponseError(message)


CLUSTER_MAX_CONNECTIONS_PER_NODE = 2**31
"""Connection pool bound per cluster node: in effect none, since the cluster client fails
commands past its bound instead of making them wait."""


def text(value: bytes | str | int) -> str:
    """A Redis reply value as text (clients here return bytes; ids and counts may be str / int)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def connect(settings: CommonSettings, **overrides: Any) -> AnyRedis:
    """A client for `settings.redis_url` that retries transient connection errors briefly.

    With `settings.redis_cluster` the URL names any node of the cluster.
    """
    options: dict[str, Any] = {
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "health_check_interval": 30,
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
    }
    options.update(overrides)
    if settings.redis_cluster:
        options.pop("health_check_interval", None)
        # redis-py's async cluster client caps each node's pool (default 100) and then raises
        # MaxConnectionsError instead of waiting (it has no blocking pool); a busy gateway has
        # more commands in flight. Unbounded unless the caller sets `max_connections`.
        options.setdefault("max_connections", CLUSTER_MAX_CONNECTIONS_PER_NODE)
        return RedisCluster.from_url(settings.redis_url, **options)
    return Redis.from_url(settings.redis_url, **options)


def connect_pooled(settings: CommonSettings, size: int, wait_s: float = 10.0) -> AnyRedis:
    """Like `connect`, but a single-server client shares at most `size` connections and a
    command waits up to `wait_s` for a free one (redis-py's default pool raises "Too many
    connections" past 100 commands in flight, e.g. a gateway's burst of connects)."""
    if settings.redis_cluster:
        return connect(settings)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=size,
        timeout=wait_s,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        health_check_interval=30,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
    )
    return Redis.from_pool(pool)


def same_slot_groups(redis: AnyRedis, keys: Iterable[str]) -> list[list[str]]:
    """`keys` split into groups that one multi-key command (XREAD, DEL, ...) may name together.

    A single server takes every key at once: one group. A Redis Cluster refuses keys of different
    hash slots in one command (CROSSSLOT), so there it is one group per slot (for the log: one per
    shard, since each shard's keys carry its `{N}` tag). Order within a group is kept.
    """
    keys = list(keys)
    if not isinstance(redis, RedisCluster):
        return [keys] if keys else []
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    return list(groups.values())


def on_lifecycle(life: Lifecycle, redis: AnyRedis, name: str = "redis") -> AnyRedis:
    """A client opened for a service's lifecycle: its close is a shutdown step and its PING
    the `name` readiness check."""
    life.on_stop(f"{name} close", redis.aclose, 2.0)
    life.check(name, redis.ping)
    return redis


class BatchRunner(Protocol):
    """Runs plain Redis commands in one round trip: `await batch([("GET", key), ...])` → their
    replies in order. The gateway's pipelined connection (`AppendPipe.batch`, hiredis shapes: a
    hash is a flat list, a set a list, a boolean an integer) or `redis_batch` (redis-py's shapes:
    a dict, a set, a bool); callers read either (`as_mapping`, `bool`, iteration)."""

    async def __call__(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]: ...


def redis_batch(redis: AnyRedis) -> BatchRunner:
    """A `BatchRunner` over redis-py (a Redis Cluster, TLS, a Unix socket): one pipeline."""

    async def run(commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        async with redis.pipeline(transaction=False) as pipe:
            for cmd in commands:
                pipe.execute_command(*cmd)
            return list(await pipe.execute())

    return run


def as_mapping(reply: Any) -> dict[Any, Any]:
    """An HGETALL reply as a dict, in either client's shape (a dict, or a flat list)."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply or ())
    return dict(zip(it, it, strict=True))
