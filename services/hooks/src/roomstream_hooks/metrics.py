"""The webhooks service's instruments (meter "roomstream.hooks"), labelled by endpoint id."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation
from roomstream_kit.telemetry import meter


class HooksMetrics:
    def __init__(self) -> None:
        m = meter("roomstream.hooks")
        self.enqueued = m.create_counter(
            "roomstream_hooks_events_enqueued", description="Events queued for an endpoint"
        )
        self.delivered = m.create_counter(
            "roomstream_hooks_events_delivered",
            description="Events an endpoint acknowledged (2xx), by endpoint",
        )
        self.deliveries = m.create_counter(
            "roomstream_hooks_deliveries", description="POSTs of a batch, by endpoint and outcome"
        )
        self.failures = m.create_counter(
            "roomstream_hooks_delivery_failures",
            description="Failed POSTs, by endpoint and reason (status code, timeout, connect)",
        )
        self.latency = m.create_histogram(
            "roomstream_hooks_delivery_seconds",
            unit="s",
            description="Time of one POST to its answer, by endpoint",
        )
        self.dead_lettered = m.create_counter(
            "roomstream_hooks_events_dead_lettered",
            description="Events moved to an endpoint's dead-letter list",
        )
        self.dead_letters_dropped = m.create_counter(
            "roomstream_hooks_dead_letters_dropped",
            description="Oldest dead letters deleted beyond ROOMSTREAM_DEAD_LETTERS_MAX",
        )
        self.backlog: dict[str, int] = {}
        """endpoint → events in its outbox (refreshed every `backlog_interval_s`)."""
        self.dead: dict[str, int] = {}
        """endpoint → events in its dead-letter list."""
        m.create_observable_gauge(
            "roomstream_hooks_backlog",
            callbacks=[self._observe(self.backlog)],
            description="Events waiting in an endpoint's outbox",
        )
        m.create_observable_gauge(
            "roomstream_hooks_dead_letters",
            callbacks=[self._observe(self.dead)],
            description="Events in an endpoint's dead-letter list",
        )

    @staticmethod
    def _observe(values: dict[str, int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(v, {"endpoint": k}) for k, v in list(values.items())]

        return callback
