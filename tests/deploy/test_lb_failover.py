"""The repo's load balancer for real: HAProxy (deploy/haproxy.cfg, only the addresses changed) in
front of two gateway processes. Clients know one URL, the balancer's; one gateway is SIGKILLed
while they chat; they reconnect through the balancer to the other one and resume with no gap and
no duplicate, and every acknowledged send is delivered exactly once. The room is made by the
compose bootstrap job (deploy/bootstrap.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Cluster
from tests.deploy.deployment import start_deployment
from tests.deploy.traffic import Chatter, check_exactly_once, wait_for

BOOTSTRAP = Path(__file__).resolve().parents[2] / "deploy" / "bootstrap.py"
CLIENTS = 6
MESSAGES_PER_CLIENT = 15


async def test_gateway_sigkill_behind_the_load_balancer(cluster: Cluster, tmp_path: Path) -> None:
    deployment = start_deployment(cluster, tmp_path, with_lb=True)
    assert deployment.lb is not None
    try:
        # The compose bootstrap job creates `general`; run twice, it is idempotent.
        env = {**os.environ, **cluster.env, "ROOMSTREAM_ROOMS_URL": deployment.rooms.url}
        for state in ("created", "already exists"):
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, str(BOOTSTRAP)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            assert f"room 'general' {state}" in done.stdout
        chatters = [
            await Chatter(f"user{i}", [deployment.lb.ws_url], "general").start()
            for i in range(CLIENTS)
        ]
        # Round-robin without stickiness: both gateways got clients through the one URL.
        first_nodes = {c.node for c in chatters}
        assert first_nodes == {"gateway-1", "gateway-2"}, first_nodes

        senders = [
            asyncio.create_task(c.send_many(MESSAGES_PER_CLIENT, pause_s=0.05)) for c in chatters
        ]
        total = CLIENTS * MESSAGES_PER_CLIENT
        await wait_for(
            lambda: sum(len(c.acked) for c in chatters) >= total // 3, "a third of the sends"
        )
        victim = deployment.gateways[0]
        victims = [c for c in chatters if c.node == "gateway-1"]
        assert victims
        await asyncio.to_thread(victim.kill)  # SIGKILL: no close frames, no deregistration

        await asyncio.wait_for(asyncio.gather(*senders), timeout=120)
        assert sum(len(c.acked) for c in chatters) == total
        # The victim's clients went back through the balancer and landed on the survivor.
        for c in victims:
            assert c.node == "gateway-2", c.nodes
        last = max(seq for c in chatters for seq in c.acked.values())
        await wait_for(
            lambda: all(c.last_seq() >= last for c in chatters), "every client caught up"
        )
        check_exactly_once(chatters)
        for c in chatters:
            await c.close()
    finally:
        deployment.stop_lb()
