"""`roomstream bench` end to end on a small scale against two real gateways (a smoke test of the
tool, not a performance test: no figure is compared with a threshold)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pkgutil
import subprocess
import sys

from tests.conftest import JWT_SECRET, PG_ADMIN_URL, REDIS_URL, Cluster


async def test_bench_small_run_reports_every_figure(cluster: Cluster, namespace: str) -> None:
    urls = [
        cluster.start("roomstream_gateway", env={"ROOMSTREAM_NODE_ID": f"bench-gw-{i}"}).ws_url
        for i in (1, 2)
    ]
    env = {
        **os.environ,
        "ROOMSTREAM_JWT_SECRET": JWT_SECRET,
        "ROOMSTREAM_NAMESPACE": namespace,
        "REDIS_URL": REDIS_URL,
    }
    env.pop("ROOMSTREAM_ROOMS_URL", None)  # no rooms service: rooms go straight into the log
    argv = [
        sys.executable, "-m", "roomstream_cli", "bench", "--urls", ",".join(urls),
        "--clients", "24", "--rooms", "3", "--rate", "15", "--duration", "2", "--warmup", "1",
        "--drain", "3", "--workers", "2", "--json",
    ]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["clients"] == 24 and result["rooms"] == 3
    assert result["gateways"] == 2  # found through the node records in Redis
    assert result["published"] > 0
    # 24 clients in 3 rooms: every acknowledged message reaches its room's 8 members.
    assert result["expected_deliveries"] == 8 * result["published"]
    assert result["received_deliveries"] == result["expected_deliveries"]
    assert result["loss"] == 0 and result["duplicates"] == 0
    assert result["latency_p50_ms"] is not None
    assert result["latency_p99_ms"] >= result["latency_p50_ms"]
    assert result["gateway_cpu_us_per_frame"] is not None
    assert result["rss_kb_per_connection"] is not None


async def _roomstream(*args: str) -> subprocess.CompletedProcess[str]:
    """`roomstream ARGS` against the local Redis and PostgreSQL (the service benchmarks make
    their own scratch namespace and database and remove them)."""
    env = {**os.environ, "REDIS_URL": REDIS_URL, "DATABASE_URL": PG_ADMIN_URL}
    argv = [sys.executable, "-m", "roomstream_cli", *args]
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=240
    )


async def test_bench_history_replay_serves_every_event() -> None:
    """`roomstream bench history replay`: a real history process persists a pre-filled log and
    the benchmark pages all of it back (it fails unless it got exactly every event)."""
    done = await _roomstream("bench", "history", "replay", "--events", "800", "--rooms", "4")
    assert done.returncode == 0, done.stderr
    assert "replay: 400 events over HTTP" in done.stdout
    assert json.loads(done.stdout[done.stdout.index("{") :])["replay_events_per_s"] > 0


async def test_bench_hooks_delivers_every_event() -> None:
    """`roomstream bench hooks`: a real hooks process delivers the whole backlog, signed, to
    the benchmark's receiver (which verifies every signature)."""
    done = await _roomstream("bench", "hooks", "--events", "200", "--rooms", "2")
    assert done.returncode == 0, done.stderr
    assert "200 events in the log (2 rooms" in done.stdout and "all delivered" in done.stdout


def test_no_service_package_ships_a_benchmark() -> None:
    """Benchmarks live in `roomstream_cli.bench`; the services' installed packages hold only
    the services (their wheels and the image carry no benchmark module)."""
    for name in ("gateway", "rooms", "history", "monitor", "hooks"):
        package = importlib.import_module(f"roomstream_{name}")
        modules = [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
        assert modules and not [m for m in modules if "bench" in m], modules
    bench = importlib.import_module("roomstream_cli.bench")
    found = {m.name for m in pkgutil.iter_modules(bench.__path__)}
    assert {"command", "history", "hooks"} <= found
