"""The history service's settings (environment variables `ROOMSTREAM_*`, see docs/history.md)."""

from __future__ import annotations

from pydantic import Field
from roomstream_kit.settings import ConsumerSettings


class HistorySettings(ConsumerSettings):
    port: int = Field(default=8200, ge=0, le=65535)

    # -- persistence (the consumer)
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    """Log entries per read of one shard, written to Postgres in one transaction (the
    consumer's other settings: `ConsumerSettings`)."""
    pg_pool_size: int = Field(default=12, ge=2)
    redis_max_connections: int = Field(default=2000, ge=10)
    """Bound of this process's Redis connection pool."""

    # -- HTTP API
    page_default: int = Field(default=50, ge=1)
    page_max: int = Field(default=200, ge=1)
    latest_cache_ttl_s: int = Field(default=300, ge=1)
    """Lifetime of the cached latest page of a room (it is also invalidated on every write)."""

    # -- stream retention (trimming the log)
    retention_interval_s: float = Field(default=10.0, gt=0)
    retention_max_age_s: float = Field(default=600.0, ge=0)
    """Trim only log entries older than this (0: no age condition)."""
    retention_max_len: int = Field(default=0, ge=0)
    """Trim only log entries beyond the newest N of a shard (0: no length condition)."""
    retention_required_groups: str = ""
    """Comma-separated consumer groups that must exist on a shard before it is trimmed."""

    # -- history retention (deleting old events from Postgres)
    history_retention_days: float = Field(default=0.0, ge=0)
    """Delete events older than this many days from Postgres (0: keep forever)."""
    history_retention_interval_s: float = Field(default=3600.0, gt=0)

    @property
    def required_groups(self) -> list[str]:
        return [g.strip() for g in self.retention_required_groups.split(",") if g.strip()]
