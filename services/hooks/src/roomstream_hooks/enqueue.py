"""The consumer's batch handler: log entries → the outbox of every endpoint that wants them.

Called by `roomstream_kit.consumer.LogConsumer`, which acknowledges the entries only after this
returns (so a crash before the commit delivers them again; the outbox's unique (endpoint, event)
keeps a waiting event from being queued twice) and retries it while Postgres is away. Nothing here
waits on an endpoint: the log is acknowledged as soon as the outbox holds the events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from roomstream_kit.consumer import LogEntry

from .metrics import HooksMetrics
from .model import HOOK_KINDS, event_json
from .store import HooksStore, QueuedEvent

_KINDS = frozenset(HOOK_KINDS)


class Enqueuer:
    def __init__(
        self,
        store: HooksStore,
        metrics: HooksMetrics,
        wake: Callable[[Iterable[str]], None],
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.wake = wake
        """Tells this process's workers their outbox has new rows."""

    async def handle(self, entries: Sequence[LogEntry]) -> None:
        events = [
            QueuedEvent(
                e.envelope.id,
                str(e.envelope.kind),
                e.envelope.room,
                event_json(e.envelope).decode(),
            )
            for e in entries
            if e.envelope.kind in _KINDS
        ]
        if not events:
            return
        counts = await self.store.enqueue(events)
        for endpoint, n in counts.items():
            self.metrics.enqueued.add(n, {"endpoint": endpoint})
        if counts:
            self.wake(counts)
