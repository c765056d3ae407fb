"""Routed delivery on a single Redis (docs/gateway.md, "Routed delivery"): each of 3 gateways
receives only its sockets' rooms (counted by `roomstream_gateway_events_received_total`), joins,
leaves and reconnects racing with appends lose nothing, and a killed pub/sub connection is healed
from the room's recent stream (seq by seq, nothing twice) — the control channel too."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import APPEND_SCRIPT, StreamKeys
from roomstream_kit.eventlog import EventLog, RoomCheck

from tests.conftest import Cluster
from tests.gateway.helpers import client, close_code
from tests.rooms.helpers import message
from tests.support import rooms as support_rooms
from tests.support.redis_server import OwnRedis, require_redis_server
from tests.support.routing import (
    append_messages,
    fills,
    join_leave_race,
    only_their_rooms,
    reconnect_race,
    seqs_until,
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
    own = OwnRedis(tmp_path)
    own.start()
    redis = aioredis.from_url(own.url)
    try:
        keys = StreamKeys(namespace=namespace)
        await support_rooms.create_room(redis, keys, "heal", "ann", members=["bob"])
        gw = cluster.start(GATEWAY, env={"REDIS_URL": own.url})
        bob, _ = await client(gw.ws_url, "bob")
        log = EventLog(redis, keys)
        await append_messages(log, "heal", 5)
        assert await seqs_until(bob, "heal", 6) == list(range(2, 7))
        before = await fills(gw)
        # The gateway's pub/sub connection is killed and 10 events are appended in the same
        # atomic step: they reach no subscriber, so only the fill can deliver them.
        async with redis.pipeline(transaction=True) as pipe:
            pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            for i in range(10):
                k, args = log._script_call(
                    message("heal", "bot", f"x{i}"), RoomCheck.EXISTS, None, None
                )
                pipe.eval(APPEND_SCRIPT, len(k), *k, *args)
            replies = await pipe.execute()
        assert replies[0] >= 1  # at least the gateway's connection was killed
        await append_messages(log, "heal", 5)
        assert await seqs_until(bob, "heal", 21) == list(range(7, 22))
        assert await fills(gw) - before >= 10
        # The control channel is subscribed again too: a kick still closes the user's socket.
        kicked = Envelope(
            id=new_event_id(),
            kind=EventKind.USER_KICKED,
            user="bob",
            ts=now_ms(),
            data={"by": "admin", "reason": "test"},
        )
        assert (await log.append(kicked)).ok
        assert await close_code(bob) == 1008
    finally:
        await redis.aclose()
        cluster.stop_all()
        own.stop()
