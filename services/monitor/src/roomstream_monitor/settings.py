"""The monitor's settings (environment variables, prefix `ROOMSTREAM_`; see docs/monitor.md)."""

from __future__ import annotations

from pydantic import Field
from roomstream_kit.settings import ConsumerSettings


class MonitorSettings(ConsumerSettings):
    # The consumer (log → message rates): `batch_size`, `poll_ms`, `reclaim_idle_ms`,
    # `reclaim_interval_ms` from `ConsumerSettings`.
    port: int = Field(default=8300, ge=0, le=65535)
    node_timeout_s: float = Field(default=15.0, gt=0)
    """A node whose last heartbeat is older than this is declared dead (one `node_failed`)."""
    check_interval_s: float = Field(default=1.0, gt=0)
    """How often the dead-node detector looks at the registry."""
    stats_interval_s: float = Field(default=5.0, gt=0)
    """How often the cluster snapshot behind `/api/stats` and the monitor's gauges is refreshed."""
    rate_window_s: int = Field(default=60, ge=1, le=3600)
    """The window of the message rates (per second, averaged over this many seconds)."""
    busiest_rooms: int = Field(default=5, ge=0, le=100)
    """How many rooms `busiest_rooms` lists."""
    scrape_timeout_s: float = Field(default=1.0, gt=0)
    """Timeout of one scrape of a gateway's `/metrics` (delivery latency percentiles)."""
    failed_keep_s: int = Field(default=3600, ge=1)
    """How long a failed node stays in `/api/nodes` (`failed`) after it was declared dead."""
    dev_login: bool = False
    """Serve `GET /dev/token`, a short-lived service token for the dashboard (the development
    runner sets it; anyone who reaches the monitor then reads the cluster's internals)."""
