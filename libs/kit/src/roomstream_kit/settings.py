"""The base settings object. Every service subclasses `CommonSettings` and reads it once at start.

All variables are prefixed `ROOMSTREAM_` except the conventional `REDIS_URL` and `DATABASE_URL`
(both also accepted with the prefix). `docs/configuration.md` lists every variable.
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from roomstream_contracts.streams import (
    DEFAULT_DEDUPE_TTL_S,
    DEFAULT_NAMESPACE,
    DEFAULT_RECENT_PER_ROOM,
    DEFAULT_SHARDS,
    StreamKeys,
)
from roomstream_contracts.tokens import DEV_JWT_SECRET

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMSTREAM_", extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("ROOMSTREAM_REDIS_URL", "REDIS_URL"),
    )
    redis_cluster: bool = False
    """Treat `redis_url` as one node of a Redis Cluster."""
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/roomstream",
        validation_alias=AliasChoices("ROOMSTREAM_DATABASE_URL", "DATABASE_URL"),
    )
    namespace: str = DEFAULT_NAMESPACE
    """Prefix of every Redis key; lets several deployments (or test runs) share one Redis."""
    shards: int = Field(default=DEFAULT_SHARDS, ge=1, le=1024)
    """Number of log shards. Fixed for the life of a deployment: all services must agree."""

    recent_per_room: int = Field(default=DEFAULT_RECENT_PER_ROOM, ge=1)
    """Recent events per room kept in Redis for fast replay (older ones come from history)."""
    dedupe_ttl_s: int = Field(default=DEFAULT_DEDUPE_TTL_S, ge=1)
    """How long a client message id is remembered for idempotent sends."""

    jwt_secret: str = DEV_JWT_SECRET
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = "HS256"
    jwt_public_key: str | None = None
    """PEM public key (or a path to one) for RS256 / ES256."""
    service_token: str | None = None
    """Token this process presents to other services; minted from `jwt_secret` when unset (HS*)."""
    jwks_url: str | None = None
    """JWKS endpoint (http/https) of the token issuer: tokens are then verified (RS256 / ES256)
    against its keys, by `kid`, instead of `jwt_secret` / `jwt_public_key`."""
    jwks_refresh_min_s: float = Field(default=10.0, ge=0)
    """Least time between two fetches of the JWKS (an unknown `kid` triggers one)."""
    jwks_cache_s: float = Field(default=300.0, gt=0)
    """Age after which the cached JWKS is fetched again (the stale set serves if that fails)."""
    jwks_timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of one JWKS fetch."""
    jwt_issuer: str | None = None
    """When set, every token must carry this `iss`."""
    jwt_audience: str | None = None
    """When set, every token's `aud` must name this audience."""
    dev_mode: bool = False
    """Set by the development runner (`roomstream up`) for its children: only then may the
    services start with the development secret or a short HS* secret."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    """Listening port; each service's settings give their own default (PROTOCOL.md)."""
    advertise_host: str = ""
    """Host name or address other processes reach this process at (the `address` of its node
    record, where the monitor scrapes `/metrics`: gateways and hooks). Empty: `host`, or this
    machine's hostname when `host` is a wildcard address (0.0.0.0, ::)."""
    node_id: str = ""
    """Name of this process in the node registry and its consumer name in consumer groups; must
    be unique among running processes and stable across restarts. Default: KIND-HOSTNAME-PORT."""
    rooms_url: str = "http://127.0.0.1:8100"
    history_url: str = "http://127.0.0.1:8200"
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: float = Field(default=15.0, gt=0)

    consumer_max_attempts: int = Field(default=5, ge=1)
    """Times one log entry may fail with its dependencies up before it is dead-lettered (an entry
    that fails with a data error, e.g. Postgres cannot store it, is dead-lettered at once)."""
    consumer_stuck_after_s: float = Field(default=30.0, gt=0)
    """A consumer whose current batch has been failing (or running) longer than this is stuck:
    `/readyz` answers 503."""

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    def advertised_host(self) -> str:
        if self.advertise_host.strip():
            return self.advertise_host.strip()
        if self.host in WILDCARD_HOSTS:
            return socket.gethostname()
        return self.host

    def node_name(self, kind: str) -> str:
        """This process's node id (`node_id`, or KIND-HOSTNAME-PORT when unset)."""
        return self.node_id or f"{kind}-{socket.gethostname()}-{self.port}"

    @property
    def keys(self) -> StreamKeys:
        return StreamKeys(namespace=self.namespace, shards=self.shards)


class ConsumerSettings(CommonSettings):
    """The settings of a service that consumes the log with a `LogConsumer` (rooms, history,
    hooks, monitor): how it reads the shards. A service may give `batch_size` its own default."""

    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Log entries per read of one shard, handled (written to Postgres) in one transaction."""
    poll_ms: int = Field(default=10_000, ge=1)
    """How long a shard read blocks waiting for new entries. A read returns as soon as an entry
    arrives, so this only sets how often an idle shard is asked again (8 shards: 0.8 reads/s)."""
    reclaim_idle_ms: int = Field(default=30_000, ge=100)
    """A dead consumer's pending entries are claimed once they were idle this long."""
    reclaim_interval_ms: int | None = Field(default=None, ge=10)
    """Time between two reclaim passes (XAUTOCLAIM over every shard); unset: half of
    `reclaim_idle_ms`. A dead consumer's entry is taken over within idle + interval."""
