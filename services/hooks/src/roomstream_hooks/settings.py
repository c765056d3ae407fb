"""The webhooks service's settings (environment variables `ROOMSTREAM_*`, see docs/hooks.md)."""

from __future__ import annotations

from pydantic import Field
from roomstream_kit.settings import ConsumerSettings


class HooksSettings(ConsumerSettings):
    port: int = Field(default=8400, ge=0, le=65535)

    # -- the consumer (log → per-endpoint outbox): `batch_size`, `poll_ms`, `reclaim_idle_ms`
    # from `ConsumerSettings`
    pg_pool_size: int = Field(default=10, ge=2)

    # -- endpoints
    hooks_endpoints: str = ""
    """Endpoints configured by environment: a JSON list of endpoint objects (docs/hooks.md),
    written to Postgres at every start (they win over API changes of the same id)."""
    endpoints_refresh_s: float = Field(default=2.0, gt=0)
    """How often the endpoint list is re-read (endpoints changed through another instance)."""

    # -- delivery (outbox → HTTP)
    delivery_batch_max: int = Field(default=100, ge=1, le=10_000)
    """Most events in one POST."""
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    """Timeout of one POST (connect + answer)."""
    delivery_retry_base_s: float = Field(default=0.5, gt=0)
    """First retry delay; doubled at every failed attempt of a batch (full jitter)."""
    delivery_retry_max_s: float = Field(default=60.0, gt=0)
    """Longest retry delay."""
    dead_letter_after_attempts: int = Field(default=100, ge=1)
    """A batch that failed this many times is moved to the endpoint's dead-letter list."""
    dead_letter_after_s: float = Field(default=3600.0, gt=0)
    """An event not delivered this long after it was enqueued is moved to the dead-letter list
    (with every event of its endpoint at least as old)."""
    dead_letters_max: int = Field(default=100_000, ge=1)
    """Dead letters kept per endpoint; beyond that the oldest are deleted (counted), so a
    permanently dead endpoint cannot fill Postgres."""
    idle_poll_s: float = Field(default=0.5, gt=0)
    """How often an idle endpoint worker looks at its outbox (events enqueued by this process
    wake it at once)."""
    lease_ttl_s: float = Field(default=15.0, gt=0)
    """An endpoint is delivered by one instance at a time, holding a lease renewed by its worker;
    another instance takes it over this long after the holder died."""
    backlog_interval_s: float = Field(default=5.0, gt=0)
    """How often the backlog and dead-letter gauges are refreshed from Postgres."""
