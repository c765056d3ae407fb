"""Retention: log trimming never passes an entry some consumer group has not processed; explicit
history retention makes `recovered` false and says where a client can continue."""

from __future__ import annotations

import re

import httpx
import redis.asyncio as aioredis
from roomstream_contracts.ids import now_ms
from roomstream_history.horizon import GroupState, horizon_distance, trim_minid
from roomstream_kit.eventlog import EventLog

from tests.conftest import Cluster, service_token
from tests.history.helpers import create_room, get_messages, send, wait_for

SVC = service_token()


def test_trim_minid_is_the_slowest_group_and_the_policy() -> None:
    fast = GroupState("fast", (100, 0), None, 50, 0)
    slow = GroupState("slow", (90, 3), (40, 1), 30, 20)
    idle = GroupState("idle", (0, 0), None, 0, 50)
    assert trim_minid([fast], required=[], age_cutoff=None, length_cutoff=None) == (100, 1)
    assert trim_minid([fast, slow], required=[], age_cutoff=None, length_cutoff=None) == (40, 1)
    assert trim_minid([fast, idle], required=[], age_cutoff=None, length_cutoff=None) == (0, 1)
    assert trim_minid([fast], required=[], age_cutoff=(70, 0), length_cutoff=(80, 0)) == (70, 0)
    assert trim_minid([fast], required=[], age_cutoff=(170, 0), length_cutoff=None) == (100, 1)
    assert trim_minid([], required=[], age_cutoff=None, length_cutoff=None) is None
    assert trim_minid([fast], required=["rooms"], age_cutoff=None, length_cutoff=None) is None
    assert horizon_distance(slow, entries_added=100, length=80, first_entry=(20, 0)) == 10
    assert horizon_distance(idle, entries_added=100, length=80, first_entry=(20, 0)) == 0
    unknown = GroupState("u", (90, 0), None, None, None)
    assert horizon_distance(unknown, entries_added=100, length=80, first_entry=(20, 0)) is None


async def test_trimming_waits_for_every_group(
    cluster: Cluster, eventlog: EventLog, redis_client: aioredis.Redis
) -> None:
    keys = eventlog.keys
    stream = keys.log(keys.room_shard("trimmed"))
    # A second consumer group that has read nothing yet (e.g. a rooms service that is down).
    for s in keys.all_logs():
        await redis_client.xgroup_create(s, "slow", id="0", mkstream=True)
    hist = cluster.start(
        "roomstream_history",
        name="history",
        env={"ROOMSTREAM_RETENTION_MAX_AGE_S": "0", "ROOMSTREAM_RETENTION_INTERVAL_S": "0.2"},
    )
    await create_room(eventlog, "trimmed", "alice")
    seqs = [await send(eventlog, "trimmed", "alice", f"m{i}") for i in range(40)]
    total = await redis_client.xlen(stream)

    async def persisted() -> bool:
        r = await get_messages(hist.url, "trimmed", SVC, after=seqs[-1] - 1, limit=1)
        return r.json()["events"][-1:] != [] and r.json()["events"][-1]["seq"] == seqs[-1]

    async def metric(group: str) -> float | None:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{hist.url}/metrics")).text
        pattern = (
            r'roomstream_history_retention_horizon_entries\{group="'
            + group
            + r'".*stream="'
            + re.escape(stream)
            + r'"\} ([0-9.]+)'
        )
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    await wait_for(persisted, what="history persisted")
    # History has processed everything, "slow" nothing: the stream stays whole.
    await wait_for(lambda: _is(metric("history"), float(total)), what="history horizon metric")
    assert await redis_client.xlen(stream) == total
    assert await metric("slow") == 0.0

    # "slow" reads 20 entries and acknowledges the first 10: exactly those 10 may go.
    reply = await redis_client.xreadgroup("slow", "c1", {stream: ">"}, count=20)
    ids = [entry_id for entry_id, _ in reply[0][1]]
    await redis_client.xack(stream, "slow", *ids[:10])
    await wait_for(lambda: _xlen_is(redis_client, stream, total - 10), what="trim to 10")
    await wait_for(lambda: _is(metric("slow"), 10.0), what="slow horizon metric")
    first = await redis_client.xrange(stream, "-", "+", count=1)
    assert first[0][0] == ids[10]  # the oldest unacknowledged entry survives
    await redis_client.xack(stream, "slow", *ids[10:])
    await wait_for(lambda: _xlen_is(redis_client, stream, total - 20), what="trim to 20")
    assert await redis_client.xlen(stream) == total - 20


async def test_history_retention_makes_recovery_partial(
    cluster: Cluster, eventlog: EventLog
) -> None:
    hist = cluster.start(
        "roomstream_history",
        name="history",
        env={
            "ROOMSTREAM_HISTORY_RETENTION_DAYS": "1",
            "ROOMSTREAM_HISTORY_RETENTION_INTERVAL_S": "0.3",
        },
    )
    await create_room(eventlog, "old", "alice")
    three_days_ago = now_ms() - 3 * 86_400_000
    for i in range(10):
        await send(eventlog, "old", "alice", f"old {i}", ts=three_days_ago + i)
    recent = [await send(eventlog, "old", "alice", f"new {i}") for i in range(5)]

    async def recovery(since: int) -> dict:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(
                f"{hist.url}/rooms/old/recovery",
                params={"since": since},
                headers={"authorization": f"Bearer {SVC}"},
            )
            assert r.status_code == 200, r.text
            return dict(r.json())

    async def purged() -> bool:
        return (await recovery(0))["first_available"] == recent[0]

    await wait_for(purged, what="old events purged")
    assert await recovery(0) == {
        "room": "old",
        "since": 0,
        "first_available": recent[0],
        "recovered": False,
    }
    assert (await recovery(recent[0] - 1))["recovered"] is True
    body = (await get_messages(hist.url, "old", SVC, after=0)).json()
    assert [e["seq"] for e in body["events"]] == recent
    assert body["first_available"] == recent[0] and body["more"] is False
    latest = (await get_messages(hist.url, "old", SVC)).json()
    assert [e["seq"] for e in latest["events"]] == recent and latest["more"] is False


async def _is(value_aw, expected: float) -> bool:  # type: ignore[no-untyped-def]
    return (await value_aw) == expected


async def _xlen_is(client: aioredis.Redis, stream: str, n: int) -> bool:
    return int(await client.xlen(stream)) == n
