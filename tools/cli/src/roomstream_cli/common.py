"""What every subcommand shares: the JWT secret, tokens, Redis settings of the deployment."""

from __future__ import annotations

from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.tokens import SERVICE_ROLE
from roomstream_kit.auth import issue_token
from roomstream_kit.settings import CommonSettings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def settings() -> CommonSettings:
    """The deployment's settings from the environment: the variables every service reads
    (`roomstream_kit.settings.CommonSettings`), so the CLI and the services agree."""
    return CommonSettings()


def _if_set(name: str) -> str | None:
    """A setting's value when the environment gave it, else None (the caller picks a default)."""
    s = settings()
    return str(getattr(s, name)) if name in s.model_fields_set else None


def jwt_secret() -> str:
    """`ROOMSTREAM_JWT_SECRET`, else the development secret of PROTOCOL.md."""
    return settings().jwt_secret


def token(user: str, *, ttl_s: float, role: str | None = None, secret: str | None = None) -> str:
    """A token for `user`, with the deployment's `iss` / `aud` when it checks them."""
    s = settings()
    return issue_token(
        secret or s.jwt_secret,
        user,
        ttl_s=ttl_s,
        role=role,
        issuer=s.jwt_issuer or None,
        audience=s.jwt_audience or None,
    )


def service_token(secret: str | None = None) -> str:
    """A token with `role: service` (may do anything in the service APIs)."""
    return token("roomstream-cli", ttl_s=3600, role=SERVICE_ROLE, secret=secret)


def env_namespace() -> str:
    return settings().namespace


def env_redis_url() -> str | None:
    """`REDIS_URL` (or `ROOMSTREAM_REDIS_URL`) when set."""
    return _if_set("redis_url")


def env_database_url() -> str | None:
    """`DATABASE_URL` (or `ROOMSTREAM_DATABASE_URL`) when set."""
    return _if_set("database_url")


def env_rooms_url() -> str | None:
    """`ROOMSTREAM_ROOMS_URL` when set."""
    return _if_set("rooms_url")


def stream_keys(namespace: str) -> StreamKeys:
    return StreamKeys(namespace=namespace, shards=settings().shards)
