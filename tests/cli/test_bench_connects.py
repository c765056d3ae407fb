"""`roomstream bench-connects`, `bench-idle` and `bench-routing` end to end on a tiny scale against
two real gateways: a smoke test of the tools' worker plumbing (start, JSON lines, reap) and
output, not a performance test (no figure is compared with a threshold)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from tests.conftest import JWT_SECRET, REDIS_URL, Cluster


async def _roomstream(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ROOMSTREAM_JWT_SECRET": JWT_SECRET,
        "ROOMSTREAM_NAMESPACE": namespace,
        "REDIS_URL": REDIS_URL,
    }
    env.pop("ROOMSTREAM_ROOMS_URL", None)  # no rooms service: rooms go straight into the log
    argv = [sys.executable, "-m", "roomstream_cli", *args]
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=240
    )


async def test_connect_idle_and_routing_benches_report_their_figures(
    cluster: Cluster, namespace: str
) -> None:
    urls = [
        cluster.start("roomstream_gateway", env={"ROOMSTREAM_NODE_ID": f"cb-gw-{i}"}).ws_url
        for i in (1, 2)
    ]
    done = await _roomstream(
        namespace, "bench-connects", "--urls", ",".join(urls), "--clients", "12", "--rooms",
        "3", "--workers", "2", "--concurrency", "4", "--settle", "0.2", "--idle", "0.5",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["clients"] == 12 and result["rooms"] == 3
    assert len(result["pids"]["gateway"]) == 2  # found through the node records
    for phase in ("connect", "reconnect"):
        assert result[phase]["errors"] == {}, result[phase]
        assert result[phase]["per_s"] > 0
    assert result["idle"]["seconds"] > 0

    done = await _roomstream(namespace, "bench-idle", "--seconds", "0.5", "--json")
    assert done.returncode == 0, done.stderr
    idle = json.loads(done.stdout)
    assert sorted(idle["pids"]) == ["gateway"] and len(idle["pids"]["gateway"]) == 2

    done = await _roomstream(
        namespace, "bench-routing", "--urls", ",".join(urls), "--rooms", "2", "--quiet", "2",
        "--rate", "20", "--duration", "1", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    routing = json.loads(done.stdout)
    assert routing["events"] > 0 and routing["gateways_without_busy_sockets"] == 1
    assert "bench-routing: publishing" in done.stderr  # the log keeps its prefix
