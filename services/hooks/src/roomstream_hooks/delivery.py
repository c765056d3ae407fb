"""Delivery: one worker per endpoint takes batches from the head of its outbox and POSTs them.

Each endpoint has its own task, HTTP client and retry state, so a slow, failing or silent
endpoint delays only its own events. A worker delivers its outbox strictly in order (`pos`), one
batch at a time, which keeps every room's events in order for that endpoint; a batch that failed
is retried as the same events (same `webhook-id`), with exponential backoff and full jitter, until
it succeeds or reaches the bound (`dead_letter_after_attempts` attempts, or its oldest event
`dead_letter_after_s` old): then it is moved to the endpoint's dead-letter list, together with
every event of the endpoint older than the age bound, and the worker goes on with the next events.

Only one instance delivers an endpoint at a time: the worker holds the endpoint's lease in
Postgres (`hooks_leases`) and renews it; it stops when it loses it. The `Dispatcher` starts a
worker for every endpoint whose lease it can take, and stops those of removed endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import asyncpg
import httpx
from roomstream_kit.retry import retry
from roomstream_kit.signing import sign_headers

from .metrics import HooksMetrics
from .model import backoff_s, batch_body, batch_id
from .settings import HooksSettings
from .store import Endpoint, HooksStore, OutboxRow

log = logging.getLogger(__name__)

USER_AGENT = "roomstream-hooks/1"


def _client(settings: HooksSettings) -> httpx.AsyncClient:
    """An endpoint's own HTTP client (its connections are not shared with other endpoints)."""
    return httpx.AsyncClient(
        timeout=settings.delivery_timeout_s,
        follow_redirects=False,
        headers={"user-agent": USER_AGENT, "content-type": "application/json"},
    )


class LeaseLost(Exception):
    """Another instance holds this endpoint now."""


class Worker:
    def __init__(
        self,
        endpoint: Endpoint,
        store: HooksStore,
        settings: HooksSettings,
        metrics: HooksMetrics,
        owner: str,
    ) -> None:
        self.endpoint = endpoint
        """The latest configuration (the dispatcher replaces it when it changes)."""
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.owner = owner
        self.wakeup = asyncio.Event()
        self.http = _client(settings)
        self._lease_at = time.monotonic()

    @property
    def id(self) -> str:
        return self.endpoint.id

    async def run(self) -> None:
        if self.http.is_closed:  # restarted after an error
            self.http = _client(self.settings)
        try:
            while True:
                await self._renew()
                rows = await self.store.head(self.id, self.settings.delivery_batch_max)
                if not rows:
                    self.wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wakeup.wait(), self.settings.idle_poll_s)
                    continue
                await self._deliver(rows)
        finally:
            await self.http.aclose()

    async def _renew(self) -> None:
        if time.monotonic() - self._lease_at < self.settings.lease_ttl_s / 3:
            return
        if not await self.store.take_lease(self.id, self.owner, self.settings.lease_ttl_s):
            raise LeaseLost(self.id)
        self._lease_at = time.monotonic()

    async def _deliver(self, rows: list[OutboxRow]) -> None:
        """Deliver one batch: until it succeeds, or until it is dead-lettered."""
        s = self.settings
        positions = [r.pos for r in rows]
        msg_id = batch_id([r.event_id for r in rows])
        body = batch_body([r.body for r in rows])
        attempts = max(r.attempts for r in rows)
        oldest = min(r.enqueued_at for r in rows)
        labels = {"endpoint": self.id}
        while True:
            error = await self._post(msg_id, body)
            if error is None:
                await self.store.delivered(self.id, positions)
                self.metrics.delivered.add(len(rows), labels)
                return
            attempts += 1
            await self.store.failed(self.id, positions, error)
            age = (datetime.now(UTC) - oldest).total_seconds()
            if attempts >= s.dead_letter_after_attempts or age >= s.dead_letter_after_s:
                moved, dropped = await self.store.dead_letter(
                    self.id, positions, s.dead_letter_after_s, s.dead_letters_max
                )
                self.metrics.dead_lettered.add(moved, labels)
                if dropped:
                    self.metrics.dead_letters_dropped.add(dropped, labels)
                    log.error(
                        "endpoint %s: %d oldest dead letters dropped (more than %d)",
                        self.id,
                        dropped,
                        s.dead_letters_max,
                        extra={"endpoint": self.id},
                    )
                log.error(
                    "endpoint %s: %d events dead-lettered after %d attempts (%s)",
                    self.id,
                    moved,
                    attempts,
                    error,
                    extra={"endpoint": self.id},
                )
                return
            delay = backoff_s(attempts, s.delivery_retry_base_s, s.delivery_retry_max_s)
            log.warning(
                "endpoint %s: delivery of %d events failed (%s); retry %d in %.2fs",
                self.id,
                len(rows),
                error,
                attempts,
                delay,
                extra={"endpoint": self.id},
            )
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """Sleep while keeping the lease."""
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.settings.lease_ttl_s / 3))
            await self._renew()

    async def _post(self, msg_id: str, body: bytes) -> str | None:
        """One signed POST; None on a 2xx answer, else what went wrong."""
        endpoint = self.endpoint
        headers = sign_headers(endpoint.secret, msg_id, body, int(time.time()))
        labels = {"endpoint": endpoint.id}
        t0 = time.perf_counter()
        try:
            response = await self.http.post(endpoint.url, content=body, headers=headers)
        except httpx.TimeoutException:
            reason, error = "timeout", "timeout"
        except httpx.HTTPError as exc:
            reason, error = "connect", f"{type(exc).__name__}: {exc}"[:300]
        else:
            self.metrics.latency.record(time.perf_counter() - t0, labels)
            if 200 <= response.status_code < 300:
                self.metrics.deliveries.add(1, {**labels, "outcome": "ok"})
                return None
            reason, error = str(response.status_code), f"HTTP {response.status_code}"
        self.metrics.deliveries.add(1, {**labels, "outcome": "failed"})
        self.metrics.failures.add(1, {**labels, "reason": reason})
        return error


class Dispatcher:
    """Keeps one worker running per endpoint this instance holds the lease of."""

    def __init__(
        self, store: HooksStore, settings: HooksSettings, metrics: HooksMetrics, owner: str
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.owner = owner
        self.workers: dict[str, tuple[Worker, asyncio.Task[None]]] = {}
        self.refresh = asyncio.Event()

    def wake(self, endpoint_ids: Iterable[str]) -> None:
        for endpoint_id in endpoint_ids:
            held = self.workers.get(endpoint_id)
            if held is not None:
                held[0].wakeup.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.sync()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("endpoint refresh failed: %s", exc)
                self.refresh.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.refresh.wait(), self.settings.endpoints_refresh_s)
        finally:
            await self.stop()

    async def sync(self) -> None:
        """Start workers for new endpoints (lease permitting), stop those of removed ones."""
        endpoints = {e.id: e for e in await self.store.endpoints()}
        for endpoint_id in list(self.workers):
            worker, task = self.workers[endpoint_id]
            if endpoint_id not in endpoints or task.done():
                self._reap(endpoint_id)
            else:
                worker.endpoint = endpoints[endpoint_id]
        for endpoint in endpoints.values():
            if endpoint.id in self.workers:
                continue
            try:
                taken = await self.store.take_lease(
                    endpoint.id, self.owner, self.settings.lease_ttl_s
                )
            except asyncpg.ForeignKeyViolationError:  # deleted meanwhile
                continue
            if taken:
                worker = Worker(endpoint, self.store, self.settings, self.metrics, self.owner)
                task = asyncio.create_task(self._supervise(worker), name=f"hook-{endpoint.id}")
                self.workers[endpoint.id] = (worker, task)

    def _reap(self, endpoint_id: str) -> None:
        _, task = self.workers.pop(endpoint_id)
        task.cancel()

    async def _supervise(self, worker: Worker) -> None:
        """Run a worker until it loses its lease; restart its loop after errors (Postgres away)."""
        try:
            await retry(
                worker.run,
                what=f"endpoint {worker.id} worker",
                retry_if=lambda exc: not isinstance(exc, LeaseLost),
                logger=log,
            )
        except LeaseLost:
            log.info("endpoint %s: lease taken by another instance", worker.id)

    async def stop(self) -> None:
        tasks = [task for _, task in self.workers.values()]
        owned = list(self.workers)
        self.workers.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for endpoint_id in owned:  # let another instance take over at once
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release_lease(endpoint_id, self.owner), 2.0)
