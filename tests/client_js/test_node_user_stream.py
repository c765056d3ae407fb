"""The TypeScript SDK's user stream in Node against real processes (rooms service, two gateways):
two clients of one user get every per-user event once and in order, also those published while
one client's gateway is SIGKILLed and it resumes on the other with `user_since`; a `read` on one
client reaches the other (scenario `user-stream` of test/e2e/scenarios.ts)."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.client.helpers import make_room
from tests.client_js.node import require_node, run_scenario
from tests.conftest import Cluster, make_token, service_token

GATEWAY = "roomstream_gateway"


async def test_sdk_clients_get_every_user_event_once_across_a_sigkill(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    require_node()
    rooms = cluster.start("roomstream_rooms", name="rooms")
    env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    gw_a = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-a"}, name="gw-a")
    gw_b = cluster.start(GATEWAY, env={**env, "ROOMSTREAM_NODE_ID": "gw-b"}, name="gw-b")
    await make_room(redis_client, namespace, "lobby", "alice", ["alice"])
    assert gw_a.proc is not None
    result = run_scenario(
        "user-stream",
        {
            "GATEWAY_A": gw_a.ws_url,
            "GATEWAY_B": gw_b.ws_url,
            "GATEWAY_A_PID": str(gw_a.proc.pid),
            "ROOM": "lobby",
            "ROOMS_URL": rooms.url,
            "SERVICE_TOKEN": service_token(),
            "TOKEN_ALICE": make_token("alice"),
        },
    )
    assert not gw_a.running
    assert result["onA"] == result["onB"] == list(range(1, 8))
    assert result["kinds"] == ["notice"] * 6 + ["read"]
    assert result["urls"] == [gw_a.ws_url, gw_b.ws_url]
