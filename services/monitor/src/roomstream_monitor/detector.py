"""Dead-node detection: the one place that decides a node failed and appends `node_failed`.

Every `check_interval_s` the detector lists the registry's nodes whose last heartbeat is older
than `node_timeout_s` and claims each through `Registry.claim` (atomic: only one monitor instance
wins). The winner appends one `node_failed` event (data: node, last_seen_ms), sharded by node; the
rooms service reacts to it. `node_failed` names the incarnation (process life) that stopped
beating: a node restarted under the same id after the claim keeps its new connections, and one
restarted before it is not stale any more (its start beat refreshed the score). Deregistered nodes (clean SIGTERM) are no longer in the zset and are
never reported.

After Redis was unreachable (and at start) the detector declares nobody dead until Redis has
answered for a whole `node_timeout_s`: during an outage no node can heartbeat, so right after it
every node looks stale; a node is dead only if it missed a full timeout while Redis was reachable.

Trade-off: the claim and the append are two steps. An append that fails because Redis is briefly
away is retried here until it succeeds; a monitor that crashes between the two loses that one
report (at most once rather than a possible duplicate).
"""

from __future__ import annotations

import asyncio
import logging
import time

from roomstream_contracts.events import Envelope, EventKind, NodeFailedData
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_kit.eventlog import EventLog
from roomstream_kit.redis import REDIS_DOWN_ERRORS, redis_unavailable
from roomstream_kit.retry import retry

from .metrics import MonitorMetrics
from .registry import Registry

log = logging.getLogger(__name__)


class DeadNodeDetector:
    def __init__(
        self,
        registry: Registry,
        eventlog: EventLog,
        metrics: MonitorMetrics,
        *,
        monitor_node: str,
        timeout_s: float,
        keep_failed_s: int,
    ) -> None:
        self.registry = registry
        self.eventlog = eventlog
        self.metrics = metrics
        self.monitor_node = monitor_node
        self.timeout_s = timeout_s
        self.keep_failed_s = keep_failed_s
        self._reachable_since: float | None = None
        """monotonic time since which every check reached Redis (None: the last one failed)."""

    def redis_failed(self) -> None:
        """Redis was unreachable: restart the grace period."""
        self._reachable_since = None

    async def check(self) -> list[str]:
        """One pass; the nodes this instance declared dead."""
        now = now_ms()
        deadline = now - int(self.timeout_s * 1000)
        stale = await self.registry.stale(deadline)
        mono = time.monotonic()
        if self._reachable_since is None:
            self._reachable_since = mono
        if mono - self._reachable_since < self.timeout_s:
            return []  # nodes have not had a full timeout with Redis reachable yet
        declared = []
        for node, _ in stale:
            if node == self.monitor_node:
                continue
            claim = await self.registry.claim(node, deadline)
            if claim is None:
                continue  # another monitor won, or the node beat again (or restarted) meanwhile
            await self._report(node, claim.last_seen_ms, claim.incarnation)
            declared.append(node)
        return declared

    async def _report(self, node: str, last_seen_ms: int, incarnation: int | None = None) -> None:
        data = NodeFailedData(node=node, last_seen_ms=last_seen_ms, incarnation=incarnation)
        envelope = Envelope(
            id=new_event_id(),
            kind=EventKind.NODE_FAILED,
            node=node,
            ts=now_ms(),
            data=data.model_dump(),
        )
        await retry(
            lambda: self.eventlog.append(envelope),
            what=f"node_failed append for {node}",
            retry_if=redis_unavailable,
            initial_s=0.1,
            max_s=2.0,
            on_retry=lambda exc: self.redis_failed(),
            logger=log,
        )
        try:
            await self.registry.record_failed(node, envelope.ts, self.keep_failed_s)
        except REDIS_DOWN_ERRORS as exc:  # only the dashboard's list of failed nodes misses it
            log.warning("could not record failed node %s: %s", node, exc)
        self.metrics.node_failures.add(1)
        log.warning(
            "node %s declared dead (last heartbeat %d ms ago)",
            node,
            envelope.ts - last_seen_ms,
            extra={
                "failed_node": node,
                "event_id": envelope.id,
                "last_seen_ms": last_seen_ms,
                "incarnation": incarnation,
            },
        )

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:
                if redis_unavailable(exc):
                    self.redis_failed()
                    self.metrics.errors.add(1, {"kind": "redis"})
                    log.warning("dead-node check failed: %s", exc)
                else:
                    self.metrics.errors.add(1, {"kind": "internal"})
                    log.exception("dead-node check failed")
            await asyncio.sleep(interval_s)
