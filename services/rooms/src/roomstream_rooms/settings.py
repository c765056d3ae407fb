"""The rooms service's one settings class (environment variables prefixed `ROOMSTREAM_`)."""

from __future__ import annotations

from pydantic import Field
from roomstream_contracts.frames import MAX_TEXT_CHARS
from roomstream_kit.settings import ConsumerSettings


class RoomsSettings(ConsumerSettings):
    """Every variable is documented in `docs/rooms.md`, section "Configuration"."""

    port: int = Field(default=8100, ge=0, le=65535)
    apply_timeout_s: float = Field(default=10.0, gt=0)
    """How long an API write waits for the projection to apply its event before answering 503."""
    lag_interval_s: float = Field(default=5.0, gt=0)
    """How often the consumer lag gauge is refreshed (XINFO GROUPS)."""
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, ge=1)
    """Longest message text the publish API takes (`too_large` beyond; the gateway's limit)."""
    publish_batch_max: int = Field(default=100, ge=1, le=10_000)
    """Most messages in one `POST /messages` batch (`too_large` beyond)."""
    publish_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body of the publish API (`too_large` beyond; not read past it)."""
    presence_grace_s: float = Field(default=5.0, ge=0)
    """How long an `offline` is held: a user who reconnects within it makes no `offline`/`online`
    pair (0: none held). The presence read models are never delayed."""
