"""The rooms service's one settings class (environment variables prefixed `ROOMSTREAM_`)."""

from __future__ import annotations

from pydantic import Field
from roomstream_kit.settings import CommonSettings


class RoomsSettings(CommonSettings):
    """Every variable is documented in `docs/rooms.md`, section "Configuration"."""

    port: int = Field(default=8100, ge=0, le=65535)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Most log entries read (and applied in one Postgres transaction) at once, per shard."""
    poll_ms: int = Field(default=1000, ge=1)
    """How long one blocking read of a shard waits for new entries."""
    reclaim_idle_ms: int = Field(default=30_000, ge=100)
    """Entries pending this long with another (dead) consumer are claimed and processed here."""
    apply_timeout_s: float = Field(default=10.0, gt=0)
    """How long an API write waits for the projection to apply its event before answering 503."""
    lag_interval_s: float = Field(default=5.0, gt=0)
    """How often the consumer lag gauge is refreshed (XINFO GROUPS)."""
    presence_grace_s: float = Field(default=5.0, ge=0)
    """How long an `offline` is held: a user who reconnects within it makes no `offline`/`online`
    pair (0: none held). The presence read models are never delayed."""
