"""What the monitor's stats refresh reads while the system is idle: the message-rate buckets only
when their version moved (the message counter moves it), a gateway's `/metrics` only when its
heartbeat's `delivered` count moved since the last scrape. Real Redis, a real HTTP server for
the scraped page; the collector in process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis.asyncio as aioredis
from roomstream_contracts.events import EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_kit.consumer import LogEntry
from roomstream_monitor import keys as monitor_keys
from roomstream_monitor.metrics import MonitorMetrics
from roomstream_monitor.rates import MessageCounter
from roomstream_monitor.registry import NodeRecord, Registry
from roomstream_monitor.settings import MonitorSettings
from roomstream_monitor.stats import Collector

from tests.conftest import REDIS_URL
from tests.support.events import envelope

PAGE = b"""# TYPE roomstream_gateway_delivery_latency_seconds histogram
roomstream_gateway_delivery_latency_seconds_bucket{le="0.005"} 3.0
roomstream_gateway_delivery_latency_seconds_bucket{le="0.01"} 4.0
roomstream_gateway_delivery_latency_seconds_bucket{le="+Inf"} 4.0
roomstream_gateway_delivery_latency_seconds_count 4.0
roomstream_gateway_delivery_latency_seconds_sum 0.01
"""


@pytest.fixture
def metrics_page() -> Iterator[tuple[str, list[str]]]:
    """A `/metrics` server: (its address, the paths asked so far)."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def collector_of(namespace: str, redis: aioredis.Redis) -> tuple[Collector, MonitorSettings]:
    settings = MonitorSettings(redis_url=REDIS_URL, namespace=namespace)
    return Collector(settings, redis, Registry(redis, settings.keys), MonitorMetrics()), settings


def messages(room: str, n: int, ts: int) -> list[LogEntry]:
    return [
        LogEntry(
            "log",
            f"{ts}-{i}",
            envelope(EventKind.MESSAGE, room, "ann", ts=ts, text="hi", client_id=new_event_id()),
        )
        for i in range(n)
    ]


async def test_rate_buckets_are_read_again_only_when_the_counter_moved_their_version(
    namespace: str,
) -> None:
    redis = aioredis.Redis.from_url(REDIS_URL)
    collector, settings = collector_of(namespace, redis)
    counter = MessageCounter(redis, namespace, settings.rate_window_s, MonitorMetrics())
    try:
        second = now_ms() // 1000 - 2
        await counter.handle(messages("r1", 3, second * 1000))
        now_s = second + 5
        assert (await collector.rate_buckets(now_s))[second]["r1"] == 3
        # Written behind the counter's back (no version move): the refresh keeps what it read.
        await redis.hincrby(monitor_keys.rate_bucket(namespace, second), "r1", 100)
        assert (await collector.rate_buckets(now_s))[second]["r1"] == 3
        # The counter's next batch moves the version: everything is read again.
        await counter.handle(messages("r2", 2, second * 1000))
        buckets = await collector.rate_buckets(now_s)
        assert buckets[second]["r1"] == 103 and buckets[second]["r2"] == 2
        # Seconds that left the window are dropped from what was read, without a read.
        assert await collector.rate_buckets(second + settings.rate_window_s + 1) == {}
        # A count of the current second, made before a refresh: not in that refresh's window,
        # in the next one's although the version did not move in between.
        current = now_ms() // 1000
        await counter.handle(messages("r3", 1, current * 1000))
        assert current not in await collector.rate_buckets(current)
        assert (await collector.rate_buckets(current + 3))[current]["r3"] == 1
    finally:
        await collector.close()
        await redis.aclose()


async def test_a_gateway_is_scraped_only_when_its_delivered_count_moved(
    namespace: str, metrics_page: tuple[str, list[str]]
) -> None:
    address, asked = metrics_page
    redis = aioredis.Redis.from_url(REDIS_URL)
    collector, _ = collector_of(namespace, redis)

    def gateway(delivered: int | None) -> NodeRecord:
        fields: dict[str, object] = {"kind": "gateway", "address": address}
        if delivered is not None:
            fields["delivered"] = delivered
        return NodeRecord("gw-1", now_ms(), fields)

    try:
        first = await collector.delivery_latency([gateway(4)])
        assert len(asked) == 1 and first["p50"] is not None
        assert await collector.delivery_latency([gateway(4)]) == first  # idle: not scraped
        assert len(asked) == 1
        await collector.delivery_latency([gateway(5)])  # it delivered: scraped
        assert len(asked) == 2
        await collector.delivery_latency([gateway(None)])  # no count (older gateway): scraped
        await collector.delivery_latency([gateway(None)])
        assert len(asked) == 4
    finally:
        await collector.close()
        await redis.aclose()
