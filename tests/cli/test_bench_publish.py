"""`roomstream bench publish` on a small scale against a real rooms service (a smoke test of the
tool: every figure is reported and every answered message was appended once; no threshold)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from tests.conftest import JWT_SECRET, REDIS_URL, Cluster


async def test_bench_publish_reports_figures_and_appends_every_answered_message(
    cluster: Cluster, namespace: str
) -> None:
    rooms = cluster.start("roomstream_rooms", env={"ROOMSTREAM_NODE_ID": "bench-rooms"})
    env = {
        **os.environ,
        "ROOMSTREAM_JWT_SECRET": JWT_SECRET,
        "ROOMSTREAM_NAMESPACE": namespace,
        "REDIS_URL": REDIS_URL,
    }
    for extra in ([], ["--batch", "5"]):
        argv = [
            sys.executable, "-m", "roomstream_cli", "bench", "publish", "--url", rooms.url,
            "--rooms", "3", "--concurrency", "4", "--duration", "1", "--warmup", "0.5", "--json",
            *extra,
        ]  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, argv, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["requests"] > 0 and result["errors"] == 0
        assert result["messages"] == result["requests"] * (5 if extra else 1)
        assert result["p50_ms"] is not None and result["p99_ms"] >= result["p50_ms"]
        # No loss, no double append: the rooms' seqs grew by every message answered 200.
        assert result["appended"] == result["answered"] >= result["messages"]
        # The rooms process was found through its node record.
        assert result["server_cpu_us_per_message"] is not None
