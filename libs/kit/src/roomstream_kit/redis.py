"""Redis clients: one factory for a single server or a Redis Cluster, bytes responses."""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .settings import CommonSettings

AnyRedis: TypeAlias = "Redis | RedisCluster"

REDIS_DOWN_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors that mean Redis is unreachable right now (answer `unavailable`, retry later)."""

CLUSTER_MAX_CONNECTIONS_PER_NODE = 2**31
"""Connection pool bound per cluster node (the single-server pool's default: unbounded)."""


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
        # MaxConnectionsError instead of waiting; a busy gateway has more commands in flight.
        # Leave it unbounded, like the single-server client's pool.
        options.setdefault("max_connections", CLUSTER_MAX_CONNECTIONS_PER_NODE)
        return RedisCluster.from_url(settings.redis_url, **options)
    return Redis.from_url(settings.redis_url, **options)
