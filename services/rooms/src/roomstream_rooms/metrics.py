"""The rooms service's instruments (OpenTelemetry, served as Prometheus text on `/metrics`).

Series (docs/rooms.md, "Metrics"): events applied by kind, batch size, consumer lag and pending,
Postgres and Redis latency, API errors by code, publish API appends by kind.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry.metrics import CallbackOptions, Observation
from roomstream_kit.telemetry import meter


class RoomsMetrics:
    def __init__(self) -> None:
        m = meter("roomstream.rooms")
        self.events_applied = m.create_counter(
            "roomstream_rooms_events_applied", description="Log events applied, by kind"
        )
        self.events_skipped = m.create_counter(
            "roomstream_rooms_events_skipped",
            description="Sequenced events skipped because they were applied before (redelivery)",
        )
        self.batch_size = m.create_histogram(
            "roomstream_rooms_batch_size", description="Log entries per applied batch"
        )
        self.postgres_latency = m.create_histogram(
            "roomstream_rooms_postgres_latency",
            unit="s",
            description="Duration of one projection transaction or API query on Postgres",
        )
        self.redis_latency = m.create_histogram(
            "roomstream_rooms_redis_latency",
            unit="s",
            description="Duration of one read-model read or write batch on Redis",
        )
        self.api_errors = m.create_counter(
            "roomstream_rooms_api_errors", description="HTTP API error answers, by code"
        )
        self.published = m.create_counter(
            "roomstream_rooms_published",
            description="Events appended by the publish API (message, message_edited, "
            "message_deleted), by kind; a replayed publish (same id) is not counted",
        )
        self.presence_events = m.create_counter(
            "roomstream_rooms_presence_events", description="online / offline events appended"
        )
        self.lag = 0
        self.pending = 0
        m.create_observable_gauge(
            "roomstream_rooms_consumer_lag",
            callbacks=[self._observe_lag],
            description="Log entries not yet read by the rooms group (XINFO GROUPS lag)",
        )
        m.create_observable_gauge(
            "roomstream_rooms_consumer_pending",
            callbacks=[self._observe_pending],
            description="Entries read by the rooms group but not yet acknowledged",
        )

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.lag)

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.pending)

    @contextmanager
    def timed_postgres(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.postgres_latency.record(time.perf_counter() - start)

    @contextmanager
    def timed_redis(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.redis_latency.record(time.perf_counter() - start)
