"""The cluster snapshot behind `/api/stats`, `/api/timeseries` and the monitor's gauges.

A background loop refreshes it every `stats_interval_s`: node records from the registry, consumer
group lag / pending from `XINFO GROUPS` on every shard, how far behind each group is (the age of
its oldest unacknowledged or undelivered entry, `XPENDING`) and which groups are stuck (behind by
more than `consumer_stuck_after_s`), the dead letters of each group (`dead-count` hashes), a timed `PING`, the message rates from the
shared per-second buckets, and delivery latency percentiles scraped from the gateways' `/metrics`.
The last `history` snapshots are kept in memory for the dashboard's charts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis.exceptions import ResponseError
from roomstream_contracts.ids import now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.lag import sum_groups
from roomstream_kit.redis import AnyRedis, redis_unavailable, text

from . import hookstats, latency
from . import keys as monitor_keys
from .metrics import MonitorMetrics
from .registry import NodeRecord, Registry
from .settings import MonitorSettings
from .window import AHEAD_S, window_rates

log = logging.getLogger(__name__)

PER_NODE_FIELDS = ("connections", "rooms", "memory_bytes", "cpu_percent", "uptime_s")


def node_view(record: NodeRecord) -> dict[str, Any]:
    """One `per_node` entry of `/api/stats`."""
    f = record.fields
    view: dict[str, Any] = {"node": record.node, "kind": record.kind}
    for name in PER_NODE_FIELDS:
        view[name] = f.get(name, 0)
    view["messages_per_s"] = f.get("messages_per_s", 0.0)
    view["address"] = f.get("address", "")
    view["last_seen_ms"] = record.last_beat_ms
    return view


def metrics_url(address: str) -> str:
    """`/metrics` of a node's heartbeat `address` (`host:port`, `http://…` or `ws://host:port/ws`)."""
    parsed = urlsplit(address if "://" in address else f"http://{address}")
    scheme = {"ws": "http", "wss": "https"}.get(parsed.scheme, parsed.scheme)
    return f"{scheme}://{parsed.netloc}/metrics"


def stream_id_ms(entry_id: bytes | str) -> int:
    """The milliseconds part of a stream entry id."""
    return int(text(entry_id).split("-", 1)[0])


def oldest_ms(
    groups: list[dict[str, Any]], pending_min: dict[str, Any], next_ids: dict[str, Any]
) -> dict[str, int]:
    """Per group of one shard: the time (ms) of its oldest entry not yet processed, i.e. the
    oldest pending entry, else the first entry after the last delivered one (lag > 0)."""
    out: dict[str, int] = {}
    for group in groups:
        name = group["name"]
        name = text(name)
        candidates = []
        if pending_min.get(name) is not None:
            candidates.append(stream_id_ms(pending_min[name]))
        if int(group.get("lag") or 0) > 0 and next_ids.get(name) is not None:
            candidates.append(stream_id_ms(next_ids[name]))
        if candidates:
            out[name] = min(candidates)
    return out


def behind_view(
    oldest: dict[str, int], now: int, stuck_after_s: float
) -> tuple[dict[str, int], list[str]]:
    """How far behind each group is (ms; 0 when caught up) and the stuck groups."""
    behind = {g: max(0, now - ms) for g, ms in oldest.items()}
    stuck = sorted(g for g, ms in behind.items() if ms > stuck_after_s * 1000)
    return behind, stuck


class Collector:
    def __init__(
        self,
        settings: MonitorSettings,
        redis: AnyRedis,
        registry: Registry,
        metrics: MonitorMetrics,
        *,
        history: int = 600,
        on_redis_error: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys: StreamKeys = settings.keys
        self.registry = registry
        self.metrics = metrics
        self.snapshot: dict[str, Any] | None = None
        self.on_redis_error = on_redis_error or (lambda: None)
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self._http = httpx.AsyncClient(timeout=settings.scrape_timeout_s)
        self._latency_prev: dict[str, latency.Buckets] = {}
        self._latency_last: dict[str, float | None] = {"p50": None, "p90": None, "p99": None}
        self._hooks_prev: tuple[float, dict[str, hookstats.Page]] = (0.0, {})
        self._hooks_latency: dict[str, dict[str, float | None]] = {}
        self._series: list[list[int]] = []
        self._rates_read: tuple[object, int, dict[int, dict[str, int]]] | None = None
        """(rate version, first second not read, buckets) of the last read of the buckets."""
        self._delivered_at_scrape: dict[str, object] = {}
        """gateway → its `delivered` count (heartbeat record) when its `/metrics` was scraped."""

    async def close(self) -> None:
        await self._http.aclose()

    def fresh_snapshot(self) -> dict[str, Any] | None:
        """The latest snapshot if it is recent (Redis answered lately), else None."""
        snap = self.snapshot
        max_age_ms = max(3 * self.settings.stats_interval_s, 3.0) * 1000
        if snap is None or now_ms() - snap["updated_ms"] > max_age_ms:
            return None
        return snap

    async def redis_latency_ms(self) -> float:
        start = time.perf_counter()
        await self.redis.ping()
        elapsed = time.perf_counter() - start
        self.metrics.redis_latency.record(elapsed)
        return round(elapsed * 1000, 3)

    async def consumer_state(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Lag and pending per group (all shards), and the time (ms) of each group's oldest
        unprocessed entry over all shards."""
        infos = []
        oldest: dict[str, int] = {}
        for stream in self.keys.all_logs():
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:
                continue  # the shard does not exist yet
            infos.append(groups)
            pending_min: dict[str, Any] = {}
            next_ids: dict[str, Any] = {}
            for group in groups:
                name = group["name"]
                name = text(name)
                if int(group.get("pending") or 0) > 0:
                    summary: Any = await self.redis.xpending(stream, name)
                    pending_min[name] = summary.get("min")
                if int(group.get("lag") or 0) > 0:
                    last = group.get("last-delivered-id") or b"0-0"
                    last = text(last)
                    nxt: Any = await self.redis.xrange(stream, f"({last}", "+", count=1)
                    if nxt:
                        next_ids[name] = nxt[0][0]
            for name, ms in oldest_ms(groups, pending_min, next_ids).items():
                oldest[name] = min(ms, oldest.get(name, ms))
        lag, pending = sum_groups(infos)
        return lag, pending, oldest

    async def dead_letters(self) -> dict[str, int]:
        """Entries each consumer group dead-lettered, over all shards (`dead-count` hashes)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in range(self.keys.shards):
                pipe.hgetall(self.keys.dead_letter_counts(shard))
            replies: list[dict[bytes, bytes]] = await pipe.execute()
        counts: dict[str, int] = {}
        for reply in replies:
            for group, n in reply.items():
                name = text(group)
                counts[name] = counts.get(name, 0) + int(n)
        return counts

    async def rate_buckets(self, now_s: int) -> dict[int, dict[str, int]]:
        """The per-second message buckets of the window before `now_s`. Read again only when
        their version moved since the last read (the message counter moves it after every
        change) or the window passed the seconds that read covered; otherwise the buckets read
        before: an idle system costs one GET per refresh (and a read a minute) instead of
        `rate_window_s` HGETALLs per refresh. A read covers the seconds up to `AHEAD_S` past now
        too: the counter may have filled those (the current second, a skewed clock) before the
        version was read, and they enter the window later without the version moving."""
        window = self.settings.rate_window_s
        version: object = await self.redis.get(monitor_keys.rate_version(self.keys.namespace))
        cached = self._rates_read
        if cached is not None and cached[0] == version and now_s <= cached[1]:
            return {s: cached[2][s] for s in range(now_s - window, now_s) if s in cached[2]}
        seconds = list(range(now_s - window, now_s + AHEAD_S + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for second in seconds:
                pipe.hgetall(monitor_keys.rate_bucket(self.keys.namespace, second))
            raw: list[dict[bytes, bytes]] = await pipe.execute()
        buckets = {
            second: {k.decode(): int(v) for k, v in bucket.items()}
            for second, bucket in zip(seconds, raw, strict=True)
            if bucket
        }
        self._rates_read = (version, seconds[-1] + 1, buckets)
        return {s: b for s, b in buckets.items() if s < now_s}

    async def rates(self, now_s: int) -> tuple[float, list[dict[str, Any]], list[list[int]]]:
        window = self.settings.rate_window_s
        buckets = await self.rate_buckets(now_s)
        rates = window_rates(buckets, now_s, window, self.settings.busiest_rooms)
        busiest = [{"room": room, "messages_per_s": rate} for room, rate in rates.busiest_rooms]
        series = [[second * 1000, count] for second, count in rates.series]
        return rates.messages_per_s, busiest, series

    async def _scrape_text(self, node: str, address: str) -> str | None:
        """A node's `/metrics` page, or None when it does not answer."""
        url = metrics_url(address)
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            return response.text
        except httpx.HTTPError as exc:
            self.metrics.errors.add(1, {"kind": "scrape"})
            log.debug("scraping %s (%s) failed: %s", node, url, exc)
            return None

    async def _scrape(self, node: str, address: str) -> latency.Buckets | None:
        page = await self._scrape_text(node, address)
        try:
            return None if page is None else latency.histogram_buckets(page)
        except ValueError as exc:
            self.metrics.errors.add(1, {"kind": "scrape"})
            log.debug("parsing the metrics of %s failed: %s", node, exc)
            return None

    async def hook_endpoints(self, instances: list[NodeRecord]) -> list[dict[str, Any]]:
        """Per-endpoint webhook figures from every live hooks instance (`hookstats`)."""
        targets = [(r.node, str(r.fields.get("address", ""))) for r in instances]
        targets = [(n, a) for n, a in targets if a]
        texts = await asyncio.gather(*(self._scrape_text(n, a) for n, a in targets))
        pages: dict[str, hookstats.Page] = {}
        for (node, _), page in zip(targets, texts, strict=True):
            if page is None:
                continue
            try:
                pages[node] = hookstats.parse_page(page)
            except ValueError as exc:
                self.metrics.errors.add(1, {"kind": "scrape"})
                log.debug("parsing the metrics of %s failed: %s", node, exc)
        now = time.monotonic()
        last_t, previous = self._hooks_prev
        self._hooks_prev = (now, pages)
        return hookstats.endpoints_view(
            pages, previous, now - last_t if last_t else 0.0, self._hooks_latency
        )

    async def delivery_latency(self, gateways: list[NodeRecord]) -> dict[str, float | None]:
        """p50/p90/p99 (ms) of deliveries since the previous scrape, over all gateways.

        Keeps the previous value when nothing was delivered meanwhile.
        """
        targets = [(g.node, str(g.fields.get("address", ""))) for g in gateways]
        targets = [(n, a) for n, a in targets if a]
        delivered = {g.node: g.fields.get("delivered") for g in gateways}
        # A gateway that delivered nothing since its last scrape (its heartbeat's count did not
        # move; no count: a gateway of an older version) has the same histogram: not scraped.
        quiet = {
            n
            for n, _ in targets
            if delivered[n] is not None
            and n in self._latency_prev
            and self._delivered_at_scrape.get(n) == delivered[n]
        }
        scraped = [(n, a) for n, a in targets if n not in quiet]
        results = await asyncio.gather(*(self._scrape(n, a) for n, a in scraped))
        deltas = []
        current: dict[str, latency.Buckets] = {n: self._latency_prev[n] for n in quiet}
        for (node, _), buckets in zip(scraped, results, strict=True):
            if buckets is None:
                continue
            current[node] = buckets
            self._delivered_at_scrape[node] = delivered[node]
            deltas.append(latency.delta(buckets, self._latency_prev.get(node, {})))
        self._latency_prev = current
        self._delivered_at_scrape = {
            n: c for n, c in self._delivered_at_scrape.items() if n in current
        }
        pcts = latency.percentiles_ms(latency.add(deltas))
        if pcts["p50"] is not None:
            self._latency_last = pcts
        return dict(self._latency_last)

    async def collect(self) -> dict[str, Any]:
        now = now_ms()
        redis_ms = await self.redis_latency_ms()
        records = await self.registry.nodes()
        deadline = now - int(self.settings.node_timeout_s * 1000)
        live = [r for r in records if r.fields and r.last_beat_ms > deadline]
        per_node = sorted((node_view(r) for r in live), key=lambda v: (v["kind"], v["node"]))
        lag, pending, oldest = await self.consumer_state()
        behind, stuck = behind_view(oldest, now, self.settings.consumer_stuck_after_s)
        dead = await self.dead_letters()
        rate, busiest, series = await self.rates(now // 1000)
        failed = await self.registry.failed(now - self.settings.failed_keep_s * 1000)
        gateways = [r for r in live if r.kind == "gateway"]
        hooks = [r for r in live if r.kind == "hooks"]
        snap: dict[str, Any] = {
            "nodes": len(per_node),
            "connections": sum(int(v["connections"] or 0) for v in per_node),
            "per_node": per_node,
            "messages_per_s": rate,
            "busiest_rooms": busiest,
            "consumer_lag": lag,
            "consumer_pending": pending,
            "consumer_behind_ms": {g: behind.get(g, 0) for g in lag},
            "consumer_stuck": stuck,
            "dead_letters": dead,
            "redis_latency_ms": redis_ms,
            "delivery_latency_ms": await self.delivery_latency(gateways),
            "failed_nodes": [{"node": n, "failed_ms": ms} for n, ms in failed],
            "updated_ms": now,
        }
        if hooks:  # optional: only where the webhooks service runs
            snap["hooks"] = {"instances": len(hooks), "endpoints": await self.hook_endpoints(hooks)}
        self.snapshot = snap
        self.history.append(
            {
                "ts": now,
                "nodes": snap["nodes"],
                "failed": len(failed),
                "connections": {
                    v["node"]: v["connections"] for v in per_node if v["kind"] == "gateway"
                },
                "messages_per_s": rate,
                "delivery_latency_ms": snap["delivery_latency_ms"],
                "consumer_lag": lag,
                "dead_letters": dead,
            }
        )
        self._series = series
        return snap

    def timeseries(self, seconds: int) -> dict[str, Any]:
        """The dashboard's series over the last `seconds` seconds."""
        since = now_ms() - seconds * 1000
        return {
            "snapshots": [h for h in self.history if h["ts"] >= since],
            "messages": [p for p in self._series if p[0] >= since],
        }

    async def run(self) -> None:
        while True:
            try:
                await self.collect()
            except Exception as exc:
                if redis_unavailable(exc):
                    self.on_redis_error()
                    self.metrics.errors.add(1, {"kind": "redis"})
                    log.warning("stats refresh failed: %s", exc)
                else:
                    self.metrics.errors.add(1, {"kind": "internal"})
                    log.exception("stats refresh failed")
            await asyncio.sleep(self.settings.stats_interval_s)
