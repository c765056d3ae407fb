"""The gateway's OpenTelemetry instruments (exported as Prometheus text on /metrics)."""

from __future__ import annotations

from roomstream_kit.telemetry import meter


class GatewayMetrics:
    """Created once per process after `setup_telemetry`."""

    def __init__(self) -> None:
        m = meter("roomstream.gateway")
        self.connections = m.create_up_down_counter(
            "roomstream_gateway_connections", description="Open authenticated sockets"
        )
        self.messages_in = m.create_counter(
            "roomstream_gateway_messages_in_total", description="Client commands by type"
        )
        self.frames_out = m.create_counter(
            "roomstream_gateway_frames_out_total", description="Room frames written to sockets"
        )
        self.events_received = m.create_counter(
            "roomstream_gateway_events_received_total",
            description="Log events this gateway received for delivery (room channels or tail)",
        )
        self.route_fills = m.create_counter(
            "roomstream_gateway_route_fills_total",
            description="Events read from a room's recent stream to fill a gap of its channel",
        )
        self.delivery_latency = m.create_histogram(
            "roomstream_gateway_delivery_latency_seconds",
            unit="s",
            description="Event ts to written to the local sockets (once per event and batch)",
        )
        self.auth_failures = m.create_counter(
            "roomstream_gateway_auth_failures_total", description="Sockets refused by auth"
        )
        self.token_closes = m.create_counter(
            "roomstream_gateway_token_closes_total",
            description="Sockets closed by their token: expired, revoked (4401), kicked (1008)",
        )
        self.token_refreshes = m.create_counter(
            "roomstream_gateway_token_refreshes_total",
            description="auth frames after authentication (token refreshes), by result",
        )
        self.rate_limited = m.create_counter(
            "roomstream_gateway_rate_limited_total", description="Commands refused by rate limit"
        )
        self.slow_consumers = m.create_counter(
            "roomstream_gateway_slow_consumer_disconnects_total",
            description="Sockets closed with 1013 because their outbound buffer overflowed",
        )
        self.keepalive_timeouts = m.create_counter(
            "roomstream_gateway_keepalive_timeouts_total",
            description="Sockets closed with 1011 because no pong answered a keepalive ping",
        )
        self.errors = m.create_counter(
            "roomstream_gateway_errors_total", description="error frames sent, by code"
        )
        self.redis_latency = m.create_histogram(
            "roomstream_gateway_redis_latency_seconds",
            unit="s",
            description="Round trip of log appends",
        )
