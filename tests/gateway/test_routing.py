"""Routed delivery on a single Redis (docs/gateway.md, "Routed delivery"): each of 3 gateways
receives only its sockets' rooms (counted by `roomstream_gateway_events_received_total`), joins,
leaves and reconnects racing with appends lose nothing, and a killed pub/sub connection is healed
from the room's recent stream (seq by seq, nothing twice) — the control channel too. The same
scenarios run on a Redis Cluster in tests/deploy/test_routing_on_cluster.py."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from roomstream_contracts.streams import StreamKeys

from tests.conftest import Cluster
from tests.support.redis_server import OwnRedis, require_redis_server
from tests.support.routing import (
    join_leave_race,
    killed_pubsub_is_healed,
    only_their_rooms,
    reconnect_race,
)

GATEWAY = "roomstream_gateway"


async def test_each_gateway_receives_only_its_rooms(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    gateways = [cluster.start(GATEWAY) for _ in range(4)]
    await only_their_rooms(redis_client, StreamKeys(namespace=namespace), gateways[:3], gateways[3])


async def test_join_leave_and_reconnect_races_lose_nothing(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    stay, churn = cluster.start(GATEWAY), cluster.start(GATEWAY)
    keys = StreamKeys(namespace=namespace)
    await join_leave_race(redis_client, keys, stay, churn)
    await reconnect_race(redis_client, keys, churn)


async def test_a_killed_pubsub_connection_is_healed(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    require_redis_server()
    own = OwnRedis(tmp_path)  # CLIENT KILL TYPE pubsub must not hit the shared server
    own.start()
    redis = aioredis.from_url(own.url)
    try:
        gw = cluster.start(GATEWAY, env={"REDIS_URL": own.url})
        await killed_pubsub_is_healed(
            redis, redis, StreamKeys(namespace=namespace), gw, revoke=True
        )
    finally:
        await redis.aclose()
        cluster.stop_all()
        own.stop()
