"""The consumer's batch handler: log entries → Postgres, then the latest-page cache.

Called by `roomstream_kit.consumer.LogConsumer`, which acknowledges the entries only after this
returns, and retries it with backoff when it raises (Postgres down: nothing is lost).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from opentelemetry.trace import Span
from roomstream_kit.consumer import LogEntry
from roomstream_kit.telemetry import extract_context, tracer

from .cache import LatestCache
from .metrics import HistoryMetrics
from .model import persistable, to_columns
from .store import HistoryStore

_tracer = tracer("roomstream.history")


class Persister:
    def __init__(self, store: HistoryStore, cache: LatestCache, metrics: HistoryMetrics) -> None:
        self.store = store
        self.cache = cache
        self.metrics = metrics

    async def handle(self, entries: Sequence[LogEntry]) -> None:
        envelopes = [e.envelope for e in entries if persistable(e.envelope)]
        if not envelopes:
            return
        start_ns = time.time_ns()
        # One span per traced event, parented on the producer's context (gateway "send" span),
        # so one trace follows a message from the socket to Postgres.
        spans: list[Span] = [
            _tracer.start_span(
                "history.persist",
                context=extract_context(env.trace),
                start_time=start_ns,
                attributes={"room": env.room or "", "seq": env.seq or 0, "event.id": env.id},
            )
            for env in envelopes
            if env.trace
        ]
        try:
            t0 = time.perf_counter()
            inserted = await self.store.persist(to_columns(envelopes))
            self.metrics.write_seconds.record(time.perf_counter() - t0)
            self.metrics.batch_size.record(len(envelopes))
            for kind, n in inserted.items():
                self.metrics.persisted.add(n, {"kind": kind})
            await self.cache.invalidate({env.room for env in envelopes if env.room})
        finally:
            for span in spans:
                span.end()
