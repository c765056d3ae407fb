"""The history service's instruments (meter "roomstream.history")."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation
from roomstream_kit.telemetry import meter


class HistoryMetrics:
    """Counters and histograms updated inline; gauges read the latest retention-job figures."""

    def __init__(self) -> None:
        m = meter("roomstream.history")
        self.persisted = m.create_counter(
            "roomstream_history_events_persisted", description="New events stored, by kind"
        )
        self.batch_size = m.create_histogram(
            "roomstream_history_batch_size", description="Events per persisted batch"
        )
        self.write_seconds = m.create_histogram(
            "roomstream_history_pg_write_seconds",
            unit="s",
            description="Postgres transaction time of one batch",
        )
        self.api_errors = m.create_counter(
            "roomstream_history_api_errors", description="HTTP API error answers, by code"
        )
        self.trimmed = m.create_counter(
            "roomstream_history_stream_trimmed", description="Log entries trimmed by retention"
        )
        self.purged = m.create_counter(
            "roomstream_history_rooms_purged", description="Rooms whose old events were deleted"
        )
        self.lag: dict[tuple[str, str], int] = {}
        """(stream, group) → entries not yet delivered to the group."""
        self.horizon: dict[tuple[str, str], int] = {}
        """(stream, group) → processed entries still in the stream (distance to trimming)."""
        m.create_observable_gauge(
            "roomstream_history_consumer_lag",
            callbacks=[self._observe(self.lag)],
            description="Log entries not yet delivered to a consumer group, per shard",
        )
        m.create_observable_gauge(
            "roomstream_history_retention_horizon_entries",
            callbacks=[self._observe(self.horizon)],
            description="Entries between a group's position and the stream's first entry",
        )

    @staticmethod
    def _observe(
        values: dict[tuple[str, str], int],
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(v, {"stream": stream, "group": group})
                for (stream, group), v in list(values.items())
            ]

        return callback
