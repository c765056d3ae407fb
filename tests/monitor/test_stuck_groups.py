"""The monitor's stats say how far behind each consumer group is and which are stuck: a group
whose oldest unacknowledged entry (or oldest undelivered one, when it lags) is older than
`ROOMSTREAM_CONSUMER_STUCK_AFTER_S`. A real monitor process and real consumer groups."""

from __future__ import annotations

import redis.asyncio as aioredis
from roomstream_contracts.codec import encode_envelope
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_monitor.stats import behind_view, oldest_ms

from tests.conftest import REDIS_URL, Cluster
from tests.monitor.helpers import stats, wait_for


def test_oldest_and_behind_are_computed_from_pending_then_undelivered() -> None:
    groups = [
        {"name": "a", "pending": 1, "lag": 5},
        {"name": b"b", "pending": 0, "lag": 2},
        {"name": "c", "pending": 0, "lag": 0},
    ]
    oldest = oldest_ms(groups, {"a": b"1000-0"}, {"a": "900-1", "b": b"3000-0"})
    assert oldest == {"a": 900, "b": 3000}
    behind, stuck = behind_view({**oldest, "c": 10_000}, now=10_000, stuck_after_s=5)
    assert behind == {"a": 9100, "b": 7000, "c": 0}
    assert stuck == ["a", "b"]


async def test_stats_show_a_stuck_group_and_a_healthy_one(cluster: Cluster, namespace: str) -> None:
    monitor = cluster.start(
        "roomstream_monitor",
        env={"ROOMSTREAM_STATS_INTERVAL_S": "0.2", "ROOMSTREAM_CONSUMER_STUCK_AFTER_S": "1"},
    )
    keys = StreamKeys(namespace=namespace)
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        stream = keys.log(0)
        await redis.xgroup_create(stream, "stalled", id="0", mkstream=True)
        env = Envelope(id=new_event_id(), kind=EventKind.TYPING, room="r", user="u", ts=now_ms())
        await redis.xadd(stream, {"r": "r", "k": "typing", "e": encode_envelope(env)})
        # Read by a consumer of group "stalled" that never acknowledges it.
        await redis.xreadgroup("stalled", "c1", {stream: ">"}, count=10)

        async def stuck() -> dict | None:
            snap = await stats(monitor.url)
            return snap if snap and "stalled" in snap["consumer_stuck"] else None

        snap = await wait_for(stuck, deadline_s=30, what="the stalled group listed as stuck")
        assert snap["consumer_behind_ms"]["stalled"] > 1000
        assert "monitor" not in snap["consumer_stuck"]  # the monitor's own group keeps up
        assert snap["consumer_behind_ms"]["monitor"] < 1000
        assert snap["dead_letters"] == {}

        await redis.xack(stream, "stalled", *[e for e, _ in await redis.xrange(stream)])

        async def recovered() -> dict | None:
            snap = await stats(monitor.url)
            return snap if snap and snap["consumer_stuck"] == [] else None

        snap = await wait_for(recovered, deadline_s=30, what="no stuck group once acknowledged")
        assert snap["consumer_behind_ms"]["stalled"] == 0
    finally:
        await redis.aclose()
