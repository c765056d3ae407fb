"""The monitor's pure parts: the sliding-window rate counter and histogram percentiles."""

from __future__ import annotations

import pytest
from roomstream_monitor.latency import (
    add,
    delta,
    histogram_buckets,
    percentiles_ms,
    quantile,
)
from roomstream_monitor.stats import metrics_url, sum_groups
from roomstream_monitor.window import TOTAL, count_batch, window_rates


def test_count_batch_buckets_by_second_and_room_and_drops_old_events() -> None:
    now_s = 1_000
    events = [
        (999_100, "a"),
        (999_900, "a"),
        (999_950, "b"),
        (998_000, "b"),
        (900_000, "old"),  # outside a 60 s window
        (5_000_000, "future"),  # far in the future: a bad clock, ignored
    ]
    buckets = count_batch(events, now_s, 60)
    assert buckets[999] == {TOTAL: 3, "a": 2, "b": 1}
    assert buckets[998] == {TOTAL: 1, "b": 1}
    assert set(buckets) == {998, 999}


def test_window_rates_average_over_complete_seconds_and_rank_rooms() -> None:
    now_s = 100
    buckets = {
        99: {TOTAL: 30, "a": 20, "b": 10},
        98: {TOTAL: 30, "a": 10, "c": 20},
        100: {TOTAL: 600, "z": 600},  # the current, partial second is not counted
        30: {TOTAL: 600, "z": 600},  # before the window
    }
    rates = window_rates(buckets, now_s, 60, top=2)
    assert rates.messages_per_s == pytest.approx(1.0)
    assert rates.busiest_rooms == [("a", 0.5), ("c", pytest.approx(0.333, abs=1e-3))]
    assert len(rates.series) == 60
    assert rates.series[-1] == (99, 30)
    assert rates.series[0] == (40, 0)
    assert window_rates(buckets, now_s, 60, top=0).busiest_rooms == []


PAGE = """# HELP roomstream_gateway_delivery_latency_seconds x
# TYPE roomstream_gateway_delivery_latency_seconds histogram
roomstream_gateway_delivery_latency_seconds_bucket{le="0.001"} 10.0
roomstream_gateway_delivery_latency_seconds_bucket{le="0.01"} 90.0
roomstream_gateway_delivery_latency_seconds_bucket{le="0.1"} 100.0
roomstream_gateway_delivery_latency_seconds_bucket{le="+Inf"} 100.0
roomstream_gateway_delivery_latency_seconds_count 100.0
roomstream_gateway_delivery_latency_seconds_sum 0.5
# HELP other_seconds y
# TYPE other_seconds histogram
other_seconds_bucket{le="+Inf"} 7.0
"""


def test_histogram_percentiles_interpolate_like_prometheus() -> None:
    buckets = histogram_buckets(PAGE)
    assert buckets == {0.001: 10.0, 0.01: 90.0, 0.1: 100.0, float("inf"): 100.0}
    # median: rank 50 lies in (0.001, 0.01] at (50-10)/(90-10) of the way.
    assert quantile(0.5, buckets) == pytest.approx(0.001 + 0.009 * 0.5)
    assert quantile(0.99, buckets) == pytest.approx(0.01 + 0.09 * 0.9)
    pct = percentiles_ms(buckets)
    assert pct["p50"] == pytest.approx(5.5)
    assert percentiles_ms({}) == {"p50": None, "p90": None, "p99": None}


def test_delta_between_scrapes_and_restarted_gateway() -> None:
    before = {0.01: 5.0, float("inf"): 5.0}
    after = {0.01: 8.0, float("inf"): 9.0}
    assert delta(after, before) == {0.01: 3.0, float("inf"): 4.0}
    # A restarted gateway's counters went down: count them from zero.
    assert delta({0.01: 1.0}, {0.01: 5.0}) == {0.01: 1.0}
    assert add([{1.0: 1.0}, {1.0: 2.0, 2.0: 3.0}]) == {1.0: 3.0, 2.0: 3.0}


def test_metrics_url_of_heartbeat_addresses() -> None:
    assert metrics_url("ws://127.0.0.1:8000/ws") == "http://127.0.0.1:8000/metrics"
    assert metrics_url("127.0.0.1:8300") == "http://127.0.0.1:8300/metrics"
    assert metrics_url("https://gw.example:443/ws") == "https://gw.example:443/metrics"


def test_sum_groups_adds_shards() -> None:
    shard0 = [
        {"name": b"rooms", "lag": 3, "pending": 1},
        {"name": "history", "lag": None, "pending": 0},
    ]
    shard1 = [{"name": "rooms", "lag": 2, "pending": 4}]
    lag, pending = sum_groups([shard0, shard1])
    assert lag == {"rooms": 5, "history": 0}
    assert pending == {"rooms": 5, "history": 0}
