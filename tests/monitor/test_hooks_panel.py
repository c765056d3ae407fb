"""`/api/stats` carries the webhooks figures per endpoint with a real hooks process, a real monitor
and real receivers: deliveries and latency for a healthy endpoint, failures and a growing backlog
for one that answers 500; no `hooks` field while no hooks instance runs."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from tests.conftest import Cluster
from tests.hooks.helpers import Log, add_endpoint, start_hooks
from tests.hooks.receiver import SECRET_A, SECRET_B, Receiver
from tests.monitor.helpers import stats, wait_for


def endpoint(snapshot: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if not snapshot or "hooks" not in snapshot:
        return None
    return next((e for e in snapshot["hooks"]["endpoints"] if e["endpoint"] == name), None)


async def test_stats_show_each_endpoints_deliveries_failures_latency_and_backlog(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    monitor = await asyncio.to_thread(
        cluster.start,
        "roomstream_monitor",
        name="monitor",
        env={"ROOMSTREAM_STATS_INTERVAL_S": "0.3"},
    )
    before = await wait_for(lambda: stats(monitor.url), what="a first snapshot")
    assert "hooks" not in before  # optional: only where the webhooks service runs

    healthy = await Receiver(SECRET_A).start()
    failing = await Receiver(SECRET_B, mode="fail").start()
    try:
        hooks = await start_hooks(cluster, {"ROOMSTREAM_DEAD_LETTER_AFTER_ATTEMPTS": "10000"})
        await add_endpoint(hooks, "good", healthy.url, SECRET_A, ["message"])
        await add_endpoint(hooks, "bad", failing.url, SECRET_B, ["message"])
        log = Log(redis_client, namespace)
        await log.room("r1")
        for i in range(30):
            await log.send("r1", f"m{i}")

        async def figures() -> tuple[dict[str, Any], dict[str, Any]] | None:
            snap = await stats(monitor.url)
            good, bad = endpoint(snap, "good"), endpoint(snap, "bad")
            if good is None or bad is None:
                return None
            # The backlog gauges are refreshed periodically, the delivery counters at once: wait
            # until the good endpoint's backlog reads its drained 0 too.
            done = (
                good["delivered"] >= 30
                and good["latency_ms"]["p99"] is not None
                and good["backlog"] == 0
            )
            return (good, bad) if done and bad["failures"] > 0 and bad["backlog"] >= 30 else None

        good, bad = await wait_for(figures, what="both endpoints in /api/stats")
        assert good["delivered"] == len(healthy.unique_ids()) == 30
        assert good["failures"] == 0 and good["backlog"] == 0 and good["dead_letters"] == 0
        assert 0 < good["latency_ms"]["p50"] <= good["latency_ms"]["p99"]
        assert bad["delivered"] == 0 and bad["backlog"] == 30
        snap = await stats(monitor.url)
        assert snap is not None and snap["hooks"]["instances"] == 1

        # Failures keep coming while the receiver answers 500: a rate, not only a total.
        async def failing_now() -> dict[str, Any] | None:
            e = endpoint(await stats(monitor.url), "bad")
            return e if e and e["failures_per_s"] > 0 else None

        await wait_for(failing_now, what="a failure rate")
    finally:
        await healthy.stop()
        await failing.stop()
