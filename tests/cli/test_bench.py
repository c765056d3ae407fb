"""`roomstream bench` end to end on a small scale against two real gateways (a smoke test of the
tool, not a performance test: no figure is compared with a threshold)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from tests.conftest import JWT_SECRET, REDIS_URL, Cluster


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
