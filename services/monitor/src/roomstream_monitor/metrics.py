"""The monitor's own instruments (Prometheus names in docs/observability.md).

Gauges of the cluster picture are observable: they read the latest snapshot of the collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from roomstream_kit.telemetry import meter

Snapshot = Callable[[], dict[str, Any] | None]


class MonitorMetrics:
    def __init__(self) -> None:
        m = meter("roomstream.monitor")
        self._snapshot: Snapshot = lambda: None
        self.events_consumed = m.create_counter(
            "roomstream.monitor.events_consumed", description="Log events consumed, by kind"
        )
        self.node_failures = m.create_counter(
            "roomstream.monitor.node_failures",
            description="node_failed events appended by this instance",
        )
        self.errors = m.create_counter(
            "roomstream.monitor.errors", description="Failed background steps, by kind"
        )
        self.redis_latency = m.create_histogram(
            "roomstream.monitor.redis_latency",
            unit="s",
            description="Round trip of a Redis PING",
        )
        m.create_observable_gauge(
            "roomstream.monitor.nodes",
            callbacks=[self._nodes],
            description="Live nodes in the registry, by kind",
        )
        m.create_observable_gauge(
            "roomstream.monitor.cluster_connections",
            callbacks=[self._connections],
            description="WebSocket connections over all gateways",
        )
        m.create_observable_gauge(
            "roomstream.monitor.messages_per_second",
            callbacks=[self._rate],
            description="message events per second over the rate window, all rooms",
        )
        m.create_observable_gauge(
            "roomstream.monitor.consumer_lag",
            callbacks=[self._lag],
            description="Log entries not yet delivered to a consumer group (all shards)",
        )
        m.create_observable_gauge(
            "roomstream.monitor.consumer_pending",
            callbacks=[self._pending],
            description="Entries delivered to a consumer group but not acknowledged",
        )

        m.create_observable_gauge(
            "roomstream.monitor.consumer_behind",
            unit="s",
            callbacks=[self._behind],
            description="Age of a consumer group's oldest unprocessed log entry (0: caught up)",
        )
        m.create_observable_gauge(
            "roomstream.monitor.dead_letters",
            callbacks=[self._dead],
            description="Log entries a consumer group dead-lettered, all shards",
        )

    def observe(self, snapshot: Snapshot) -> None:
        """Read the cluster gauges from `snapshot` (the collector's, made after these
        instruments because it records into them)."""
        self._snapshot = snapshot

    def _behind(self, options: CallbackOptions) -> Iterable[Observation]:
        snap = self._snapshot()
        return [
            Observation(v / 1000, {"group": g})
            for g, v in (snap or {}).get("consumer_behind_ms", {}).items()
        ]

    def _dead(self, options: CallbackOptions) -> Iterable[Observation]:
        snap = self._snapshot()
        return [
            Observation(v, {"group": g}) for g, v in (snap or {}).get("dead_letters", {}).items()
        ]

    def _nodes(self, options: CallbackOptions) -> Iterable[Observation]:
        snap = self._snapshot()
        if not snap:
            return []
        kinds: dict[str, int] = {}
        for node in snap["per_node"]:
            kinds[node["kind"] or "unknown"] = kinds.get(node["kind"] or "unknown", 0) + 1
        return [Observation(n, {"kind": kind}) for kind, n in kinds.items()]

    def _connections(self, options: CallbackOptions) -> Iterable[Observation]:
        snap = self._snapshot()
        return [Observation(snap["connections"])] if snap else []

    def _rate(self, options: CallbackOptions) -> Iterable[Observation]:
        snap = self._snapshot()
        return [Observation(snap["messages_per_s"])] if snap else []

    def _lag(self, options: CallbackOptions) -> Iterable[Observation]:
        snap = self._snapshot()
        return [
            Observation(v, {"group": g}) for g, v in (snap or {}).get("consumer_lag", {}).items()
        ]

    def _pending(self, options: CallbackOptions) -> Iterable[Observation]:
        snap = self._snapshot()
        return [
            Observation(v, {"group": g})
            for g, v in (snap or {}).get("consumer_pending", {}).items()
        ]
