"""Routed delivery on a real 3-master Redis Cluster: the rooms' channels are shard channels
(SSUBSCRIBE on the master of the room's slot, SPUBLISH from the append script in that slot), the
control channel is classic pub/sub (broadcast by the cluster). The scenarios are those of the
single-Redis tests (tests/support/routing.py), with rooms picked on different masters."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.crc import key_slot
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.redis import AnyRedis
from roomstream_kit.settings import CommonSettings

from tests.conftest import Cluster
from tests.deploy.redis_cluster import RedisClusterProcesses
from tests.support.routing import (
    join_leave_race,
    killed_pubsub_is_healed,
    only_their_rooms,
    reconnect_race,
)

GATEWAY = "roomstream_gateway"


def _env(rc: RedisClusterProcesses, settings: CommonSettings) -> dict[str, str]:
    return {
        "REDIS_URL": rc.url,
        "ROOMSTREAM_REDIS_CLUSTER": "1",
        "ROOMSTREAM_NAMESPACE": settings.namespace,
    }


def _rooms_on_masters(rc: RedisClusterProcesses, keys: StreamKeys, prefix: str) -> list[str]:
    """One room per master (each room's slot on another master)."""
    owners = rc.slot_owner()
    by_port: dict[int, str] = {}
    for i in range(1000):
        room = f"{prefix}{i}"
        port = owners[key_slot(keys.channel(room).encode())]
        by_port.setdefault(port, room)
        if len(by_port) == rc.masters:
            break
    return list(by_port.values())


async def test_each_gateway_receives_only_its_rooms_on_a_cluster(
    cluster: Cluster,
    redis_cluster: RedisClusterProcesses,
    settings: CommonSettings,
    client: AnyRedis,
) -> None:
    env = _env(redis_cluster, settings)
    gateways = [cluster.start(GATEWAY, env=env) for _ in range(4)]
    rooms = _rooms_on_masters(redis_cluster, settings.keys, "route")
    await only_their_rooms(client, settings.keys, gateways[:3], gateways[3], rooms)


async def test_races_and_a_killed_connection_on_a_cluster(
    cluster: Cluster,
    redis_cluster: RedisClusterProcesses,
    settings: CommonSettings,
    client: AnyRedis,
) -> None:
    env = _env(redis_cluster, settings)
    stay, churn = cluster.start(GATEWAY, env=env), cluster.start(GATEWAY, env=env)
    keys = settings.keys
    race, again, heal = _rooms_on_masters(redis_cluster, keys, "r")
    await join_leave_race(client, keys, stay, churn, race)
    await reconnect_race(client, keys, churn, again)
    port = redis_cluster.slot_owner()[key_slot(keys.channel(heal).encode())]
    node = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        await killed_pubsub_is_healed(node, client, keys, stay, heal)
    finally:
        await node.aclose()
