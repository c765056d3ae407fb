"""What every subcommand shares: the JWT secret, tokens, Redis settings of the deployment."""

from __future__ import annotations

import os

from roomstream_contracts.streams import DEFAULT_NAMESPACE, DEFAULT_SHARDS, StreamKeys
from roomstream_contracts.tokens import DEV_JWT_SECRET, SERVICE_ROLE
from roomstream_kit.auth import issue_token

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def jwt_secret() -> str:
    """`ROOMSTREAM_JWT_SECRET`, else the development secret of PROTOCOL.md."""
    return os.environ.get("ROOMSTREAM_JWT_SECRET") or DEV_JWT_SECRET


def user_token(user: str, ttl_s: float = 24 * 3600, secret: str | None = None) -> str:
    return issue_token(secret or jwt_secret(), user, ttl_s=ttl_s)


def service_token(secret: str | None = None) -> str:
    """A token with `role: service` (may do anything in the service APIs)."""
    return issue_token(secret or jwt_secret(), "roomstream-cli", ttl_s=3600, role=SERVICE_ROLE)


def env_namespace() -> str:
    return os.environ.get("ROOMSTREAM_NAMESPACE") or DEFAULT_NAMESPACE


def env_redis_url() -> str | None:
    return os.environ.get("ROOMSTREAM_REDIS_URL") or os.environ.get("REDIS_URL")


def stream_keys(namespace: str) -> StreamKeys:
    shards = int(os.environ.get("ROOMSTREAM_SHARDS") or DEFAULT_SHARDS)
    return StreamKeys(namespace=namespace, shards=shards)
