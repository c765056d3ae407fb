"""The gateway's one settings class (environment variables `ROOMSTREAM_*`, see docs/gateway.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from roomstream_contracts.frames import AUTH_FRAME_TIMEOUT_S, MAX_FRAME_BYTES, MAX_TEXT_CHARS
from roomstream_kit.settings import CommonSettings
from roomstream_kit.signing import secret_problem

MIN_PUBSUB_PING_S = 0.1


class GatewaySettings(CommonSettings):
    port: int = Field(default=8000, ge=0, le=65535)
    allowed_origins: str = ""
    """Comma-separated Origin allow-list; empty allows every origin. Requests without an Origin
    header (non-browser clients) are always allowed."""
    auth_timeout_s: float = Field(default=AUTH_FRAME_TIMEOUT_S, gt=0)
    """How long a socket without a header/query token may take to send its `auth` frame."""
    token_refresh_lead_s: float = Field(default=30.0, ge=0)
    """A `refresh` frame goes out this long before a socket's token expires (at once when the
    token has less left); at expiry the socket is closed with 4401 unless refreshed."""
    dev_login: bool = False
    """Serve `GET /dev/token?user=NAME` (development runner only: anyone may log in as anyone)."""

    max_frame_bytes: int = Field(default=MAX_FRAME_BYTES, ge=1024)
    """Largest client frame; larger ones close the socket with 1009."""
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, ge=1)
    """Longest message text; longer ones get `too_large`."""
    max_buffer_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Outbound buffer bound per socket; a reader that falls further behind is closed with 1013."""
    slow_close_timeout_s: float = Field(default=5.0, gt=0)
    """How long a slow reader's 1013 close may take before its TCP connection is aborted."""
    compression: Literal["none", "deflate"] = "none"
    """permessage-deflate costs CPU on every frame and disables the shared-bytes fast path."""
    ping_interval_s: float = Field(default=20.0, gt=0)
    """WebSocket keepalive ping interval (also the `heartbeat` of `welcome`)."""
    ping_timeout_s: float = Field(default=20.0, gt=0)
    """A socket whose pong has not arrived this long after a ping is closed with 1011."""
    keepalive_tick_s: float = Field(default=1.0, gt=0)
    """The one keepalive timer pings 1/(interval/tick) of the sockets per tick (`keepalive`):
    shorter spreads the pings more evenly, at more timer wake-ups."""
    close_timeout_s: float = Field(default=5.0, gt=0)
    shutdown_deadline_s: float = Field(default=30.0, gt=0)
    """Longest a stop (SIGTERM) may take; past it the process logs where it hung and exits 1."""
    listen_backlog: int = Field(default=4096, ge=1)
    """TCP accept queue of the WebSocket listener (the kernel caps it at `net.core.somaxconn`).
    asyncio's default of 100 drops the SYNs of a reconnect burst, and each dropped client waits
    for its SYN retransmission (1 s, 3 s, 7 s, ...) with the gateway idle."""
    max_queue: int = Field(default=4, ge=1)
    """Incoming frames buffered per socket before reading pauses (memory per connection)."""

    send_rate_per_s: float = Field(default=20.0, gt=0)
    """Token-bucket refill rate of `send` / `edit` / `delete` per user on this gateway."""
    send_burst: int = Field(default=40, ge=1)
    """Token-bucket size (commands a user may send at once)."""
    rate_limit_close_after: int = Field(default=20, ge=1)
    """Consecutive rate-limited commands after which the socket is closed with 1008."""
    typing_interval_s: float = Field(default=2.0, ge=0)
    """At most one `typing` event per room and connection in this interval; more are dropped."""

    delivery: Literal["routed", "tail"] = "routed"
    """`routed`: receive only the rooms of local sockets (per-room channels, `routing`);
    `tail`: read every shard (the design before routing; kept for comparison)."""
    pubsub_ping_s: float = Field(default=5.0, ge=0)
    """Routed delivery: each pub/sub connection to Redis is pinged this often and dropped when
    it has received nothing (no answer, no message) by the next ping (a silently dead link is noticed within two
    intervals, then its rooms and the control channel heal); 0 disables the ping. At least
    `MIN_PUBSUB_PING_S` otherwise (a tiny interval would drop every connection in turn)."""
    tail_block_ms: int = Field(default=1000, ge=1)
    """XREAD BLOCK of the delivery tail."""
    tail_count: int = Field(default=1000, ge=1)
    """Largest XREAD batch per shard."""
    redis_pool_size: int = Field(default=64, ge=1)
    """Redis connections shared by the commands of all sockets (more wait for a free one)."""
    http_timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of calls to the rooms and history services."""

    publish_hook_url: str = ""
    """Endpoint asked before each socket `send` is appended (allow / reject / replace the text;
    docs/hooks.md, "Publish hook"). Empty: no hook."""
    publish_hook_secret: str = ""
    """Standard Webhooks secret (`whsec_…`) the hook's requests are signed with; required with
    `publish_hook_url`."""
    publish_hook_timeout_ms: int = Field(default=500, ge=1, le=60_000)
    """How long a send waits for the hook's verdict (a free request slot included)."""
    publish_hook_failure: Literal["open", "closed"] = "closed"
    """What a send does when the hook fails (timeout, error, bad answer): `open` appends it as
    sent, `closed` answers `unavailable`."""
    publish_hook_concurrency: int = Field(default=64, ge=1)
    """Hook requests in flight at once per gateway (the HTTP client's connections too)."""

    @model_validator(mode="after")
    def _pubsub_ping_sane(self) -> GatewaySettings:
        if 0 < self.pubsub_ping_s < MIN_PUBSUB_PING_S:
            raise ValueError(
                f"ROOMSTREAM_PUBSUB_PING_S must be 0 (off) or at least {MIN_PUBSUB_PING_S} s"
            )
        return self

    @model_validator(mode="after")
    def _publish_hook_complete(self) -> GatewaySettings:
        url = self.publish_hook_url.strip()
        if url:
            if not url.startswith(("http://", "https://")):
                raise ValueError("ROOMSTREAM_PUBLISH_HOOK_URL must be an http:// or https:// URL")
            problem = secret_problem(self.publish_hook_secret)
            if problem:
                raise ValueError(f"ROOMSTREAM_PUBLISH_HOOK_SECRET: {problem}")
        return self

    def origin_list(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]
