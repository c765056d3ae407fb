"""Logs are one JSON object per line and not flooded (issue 9, item 10), with real processes:

- under traffic, every line the rooms service and the monitor write parses as JSON; FastStream's
  per-message "Received" / "Processed" lines are gone, and the monitor's scrapes of the gateways'
  `/metrics` (and anyone's scrapes of its own) are not logged at INFO;
- while their Redis restarts, the consumer library's failed reads are one JSON line each with
  the error, never a raw traceback.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.conftest import Cluster, make_token
from tests.gateway.helpers import client, request
from tests.monitor.helpers import wait_for
from tests.monitor.test_redis_outage import OwnRedis, own_redis  # noqa: F401 (fixture)
from tests.support.processes import ServiceProcess
from tests.support.together import Spec, start_together


def json_lines(proc: ServiceProcess) -> list[dict[str, object]]:
    """Every line of the process's output, each parsed as JSON (fails on the first that is not)."""
    out = []
    for n, line in enumerate(Path(proc.log_path).read_text(errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"{proc.name} line {n + 1} is not JSON: {line[:300]!r}") from None
        assert isinstance(parsed, dict), line
        out.append(parsed)
    return out


async def test_logs_under_traffic_are_json_and_quiet(cluster: Cluster) -> None:
    rooms_spec = Spec("roomstream_rooms", "rooms")
    rooms, gw, monitor = await start_together(
        cluster,
        rooms_spec,
        Spec(
            "roomstream_gateway",
            "gw",
            {"ROOMSTREAM_ROOMS_URL": rooms_spec.url},
            ready_path="/healthz",
        ),
        Spec("roomstream_monitor", "monitor", {"ROOMSTREAM_STATS_INTERVAL_S": "0.2"}),
    )
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            f"{rooms.url}/rooms",
            json={"id": "chatter", "name": "Chatter", "kind": "public", "members": ["bob"]},
            headers={"authorization": f"Bearer {make_token('ann')}"},
        )
        assert r.status_code == 201, r.text
        ann, _ = await client(gw.ws_url, "ann")
        bob, _ = await client(gw.ws_url, "bob")
        for i in range(20):
            ack = await request(
                ann, {"type": "send", "room": "chatter", "text": f"{i}", "id": f"{i}"}
            )
            assert ack["type"] == "ack", ack
        await ann.close()
        await bob.close()
        for _ in range(5):
            assert (await http.get(f"{monitor.url}/metrics")).status_code == 200
            assert (await http.get(f"{rooms.url}/metrics")).status_code == 200

        async def scraped() -> bool:
            # The monitor has scraped the gateway's /metrics (delivery latency percentiles).
            r = await http.get(f"{monitor.url}/metrics")
            return "roomstream_monitor_cluster_connections" in r.text

        await wait_for(scraped, what="the monitor's first snapshots")
        await asyncio.sleep(1.5)  # several more snapshots (each scrapes the gateway)
    for proc in (rooms, monitor):
        lines = json_lines(proc)
        assert lines, proc.name
        for line in lines:
            msg = str(line.get("msg", ""))
            assert msg not in ("Received", "Processed"), (proc.name, line)
            if line.get("level") == "info":
                assert "/metrics" not in msg, (proc.name, line)


async def test_a_redis_restart_logs_one_json_line_per_error_and_no_traceback(
    cluster: Cluster,
    own_redis: OwnRedis,  # noqa: F811
) -> None:
    env = {"REDIS_URL": own_redis.url, "ROOMSTREAM_POLL_MS": "50"}
    rooms, monitor = await start_together(
        cluster, Spec("roomstream_rooms", "rooms", env), Spec("roomstream_monitor", "monitor", env)
    )
    own_redis.stop()
    await asyncio.sleep(3)  # every consumer poll fails meanwhile
    own_redis.start()

    async with httpx.AsyncClient(timeout=5) as http:

        async def ready() -> bool:
            codes = [(await http.get(f"{p.url}/readyz")).status_code for p in (rooms, monitor)]
            return codes == [200, 200]

        await wait_for(ready, what="ready after the restart")
    for proc in (rooms, monitor):
        lines = json_lines(proc)
        assert not [ln for ln in lines if "Traceback" in json.dumps(ln)], proc.name
        errors = [ln for ln in lines if ln.get("logger") == "roomstream.faststream"]
        assert errors, f"{proc.name}: the failed reads are logged"
        assert all("Error" in str(ln.get("error", "")) for ln in errors), errors[:3]
