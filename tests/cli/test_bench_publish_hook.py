"""`roomstream bench publish-hook` end to end on a tiny scale (a smoke test of the tool: it starts
its own hook endpoint and two gateways on the local Redis; no figure is compared with a
threshold). The hooked gateway fails closed, so no errors means the hook answered every send."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from tests.conftest import JWT_SECRET, REDIS_URL


async def test_publish_hook_bench_reports_both_gateways() -> None:
    env = {**os.environ, "ROOMSTREAM_JWT_SECRET": JWT_SECRET, "REDIS_URL": REDIS_URL}
    argv = [
        sys.executable, "-m", "roomstream_cli", "bench", "publish-hook", "--clients", "2",
        "--rounds", "2", "--per-round", "3", "--action", "replace", "--timeout-ms", "10000",
        "--json",
    ]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sends_per_gateway"] == 12 and result["action"] == "replace"
    for name in ("no_hook", "hook"):
        figures = result[name]
        assert (figures["sends"], figures["errors"]) == (12, 0), figures
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
