"""Pure parts of the command line: the runner's plan, latency histograms, /proc parsing."""

from __future__ import annotations

import os
import random
import socket

from roomstream_cli.bench.procstat import (
    cpu_seconds,
    parse_stat_cpu_seconds,
    parse_status_rss_kb,
    rss_kb,
)
from roomstream_cli.bench.stats import Histogram, median
from roomstream_cli.up.plan import Plan, Ports, port_taken, taken_ports


def test_ports_from_base_and_service_order() -> None:
    ports = Ports.from_base(9000, 3)
    assert (ports.gateways, ports.rooms, ports.history, ports.monitor, ports.hooks) == (
        [9000, 9001, 9002],
        9100,
        9200,
        9300,
        9400,
    )
    plan = Plan(ports)
    # Rooms and history first (gateways call them), gateways last; every name unique.
    assert [s.name for s in plan.services] == [
        "rooms-1",
        "history-1",
        "monitor-1",
        "hooks-1",
        "gateway-1",
        "gateway-2",
        "gateway-3",
    ]
    assert [s.required for s in plan.services] == [False, False, False, False, True, True, True]


def test_child_environment_allows_only_our_own_origins() -> None:
    plan = Plan(Ports.from_base(8000, 2))
    env = plan.env(
        plan.by_kind("gateway")[1],
        redis_url="redis://r",
        database_url="postgresql://d",
        namespace="ns",
        jwt_secret="s",
    )
    assert env["ROOMSTREAM_PORT"] == "8001"
    assert env["ROOMSTREAM_NODE_ID"] == "gateway-2"
    assert env["ROOMSTREAM_DEV_LOGIN"] == "1"
    assert env["ROOMSTREAM_DEV_MODE"] == "1"  # the development secret is allowed here only
    assert env["ROOMSTREAM_ROOMS_URL"] == "http://127.0.0.1:8100"
    assert env["ROOMSTREAM_HISTORY_URL"] == "http://127.0.0.1:8200"
    assert (env["REDIS_URL"], env["DATABASE_URL"], env["ROOMSTREAM_NAMESPACE"]) == (
        "redis://r",
        "postgresql://d",
        "ns",
    )
    assert set(env["ROOMSTREAM_ALLOWED_ORIGINS"].split(",")) == {
        f"http://{host}:{port}"
        for host in ("localhost", "127.0.0.1")
        for port in (8000, 8001, 8300)
    }


def test_taken_ports_finds_listeners_and_repeats() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        assert port_taken("127.0.0.1", busy)
        free = busy
        while port_taken("127.0.0.1", free):
            free = random.randrange(30000, 40000)
        assert taken_ports("127.0.0.1", [("a", busy), ("b", free), ("c", free)]) == [
            ("a", busy),
            ("c", free),
        ]


def test_histogram_percentiles_and_merge() -> None:
    a, b = Histogram(), Histogram()
    for ms in range(1, 101):  # 1..100 ms
        (a if ms % 2 else b).add(ms / 1000)
    a.merge(Histogram.from_json(b.to_json()))
    assert a.count == 100
    assert a.max_s == 0.1
    p50, p99 = a.percentile(50), a.percentile(99)
    assert p50 is not None and 0.050 <= p50 <= 0.05005
    assert p99 is not None and 0.099 <= p99 <= 0.09905
    assert a.percentile(100) == 0.1
    assert Histogram().percentile(50) is None
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_proc_parsing() -> None:
    # A command name with spaces and parentheses must not shift the fields.
    line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 1 0"
    assert parse_stat_cpu_seconds(line) == (250 + 150) / os.sysconf("SC_CLK_TCK")
    assert parse_status_rss_kb("Name:\tpython\nVmRSS:\t  51234 kB\nThreads: 1\n") == 51234
    assert rss_kb(os.getpid()) > 1000
    assert cpu_seconds(os.getpid()) > 0
