"""The atomic append script through `roomstream_kit.eventlog.EventLog`, against real Redis."""

from __future__ import annotations

import asyncio

import orjson
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import AppendStatus, EventLog, OwnerCheck, RoomCheck

from tests.conftest import REDIS_URL


def event(event_kind: EventKind, room: str, user: str, **data: object) -> Envelope:
    return Envelope(
        id=new_event_id(), kind=event_kind, room=room, user=user, ts=now_ms(), data=data
    )


async def create(log: EventLog, room: str, owner: str = "owner") -> None:
    env = event(EventKind.ROOM_CREATED, room, owner, name=room, kind="public", owner=owner)
    result = await log.append(env, room_check=RoomCheck.NEW)
    assert result.status == AppendStatus.OK and result.seq == 1


async def test_concurrent_appends_get_gapless_unique_seqs(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    await create(log, "busy")
    # Independent clients (connections) appending at once, as several gateways would.
    clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(4)]
    logs = [EventLog(c, keys) for c in clients]
    tasks, per_task = 40, 25

    async def writer(t: int) -> list[int]:
        seqs = []
        for i in range(per_task):
            env = event(
                EventKind.MESSAGE, "busy", f"user{t}", text=f"{t}/{i}", client_id=f"{t}-{i}"
            )
            result = await logs[t % len(logs)].append(
                env, room_check=RoomCheck.EXISTS, dedupe_id=f"{t}-{i}"
            )
            assert result.status == AppendStatus.OK
            assert result.seq is not None
            seqs.append(result.seq)
        return seqs

    try:
        results = await asyncio.gather(*(writer(t) for t in range(tasks)))
    finally:
        for c in clients:
            await c.aclose()
    every = sorted(s for seqs in results for s in seqs)
    assert every == list(range(2, 2 + tasks * per_task))
    for seqs in results:
        assert seqs == sorted(seqs)  # one writer's appends keep their order
    # The recent buffer holds the same events under ids SEQ-0, in order, with seq in the JSON.
    recent = await redis_client.xrange(keys.recent("busy"))
    assert [int(eid.split(b"-")[0]) for eid, _ in recent] == list(range(1, 2 + tasks * per_task))
    assert [orjson.loads(f[b"e"])["seq"] for _, f in recent] == list(range(1, 2 + tasks * per_task))
    # The shard stream has them in seq order too (stream order = room order).
    shard = keys.log(keys.room_shard("busy"))
    logged = [
        orjson.loads(f[b"e"])["seq"]
        for _, f in await redis_client.xrange(shard)
        if f[b"r"] == b"busy"
    ]
    assert logged == list(range(1, 2 + tasks * per_task))


async def test_dedupe_returns_the_first_ack_and_appends_nothing(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    await create(log, "idem")
    first = await log.append(
        event(EventKind.MESSAGE, "idem", "ann", text="hi", client_id="c1"), dedupe_id="c1"
    )
    shard = keys.log(keys.room_shard("idem"))
    length = await redis_client.xlen(shard)
    again = await log.append(
        event(EventKind.MESSAGE, "idem", "ann", text="hi", client_id="c1"), dedupe_id="c1"
    )
    assert first.status == AppendStatus.OK and again.status == AppendStatus.DUPLICATE
    assert (again.seq, again.event_id) == (first.seq, first.event_id)
    assert again.ok
    assert await redis_client.xlen(shard) == length
    # The id is per user: another user's c1 is a new message.
    other = await log.append(
        event(EventKind.MESSAGE, "idem", "ben", text="hi", client_id="c1"), dedupe_id="c1"
    )
    assert other.status == AppendStatus.OK and other.seq == (first.seq or 0) + 1
    assert 0 < await redis_client.ttl(keys.dedupe("idem", "ann", "c1")) <= log.dedupe_ttl_s


async def test_room_checks(redis_client: aioredis.Redis, namespace: str) -> None:
    log = EventLog(redis_client, StreamKeys(namespace=namespace))
    missing = await log.append(
        event(EventKind.MESSAGE, "ghost", "ann", text="x", client_id="1"),
        room_check=RoomCheck.EXISTS,
    )
    assert missing.status == AppendStatus.NO_ROOM and not missing.ok and missing.seq is None
    await create(log, "real")
    again = await log.append(
        event(EventKind.ROOM_CREATED, "real", "ann", name="x", kind="public", owner="ann"),
        room_check=RoomCheck.NEW,
    )
    assert again.status == AppendStatus.ROOM_EXISTS
    ok = await log.append(
        event(EventKind.MEMBER_JOINED, "real", "ann", by="ann"), room_check=RoomCheck.EXISTS
    )
    assert ok.status == AppendStatus.OK and ok.seq == 2
    # Live kinds get no seq and do not move the room's seq.
    live = await log.append(event(EventKind.TYPING, "real", "ann"))
    assert live.status == AppendStatus.OK and live.seq is None and live.stream_id
    after = await log.append(event(EventKind.MEMBER_LEFT, "real", "ann", by="ann"))
    assert after.seq == 3


async def test_owner_check(redis_client: aioredis.Redis, namespace: str) -> None:
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    await create(log, "own")
    msg = await log.append(event(EventKind.MESSAGE, "own", "ann", text="v1", client_id="m"))
    assert msg.seq == 2

    def edit(user: str, target: int) -> Envelope:
        return event(EventKind.MESSAGE_EDITED, "own", user, target_seq=target, text="v2")

    by_author = await log.append(edit("ann", 2), owner_check=OwnerCheck(2, "ann"))
    assert by_author.status == AppendStatus.OK and by_author.seq == 3
    by_other = await log.append(edit("ben", 2), owner_check=OwnerCheck(2, "ben"))
    assert by_other.status == AppendStatus.NOT_OWNER
    not_message = await log.append(edit("owner", 1), owner_check=OwnerCheck(1, "owner"))
    assert not_message.status == AppendStatus.NOT_MESSAGE
    unknown = await log.append(edit("ann", 99), owner_check=OwnerCheck(99, "ann"))
    assert unknown.status == AppendStatus.UNKNOWN_TARGET
    # Refusals append nothing: the next event still gets seq 4.
    delete = await log.append(
        event(EventKind.MESSAGE_DELETED, "own", "ann", target_seq=2),
        owner_check=OwnerCheck(2, "ann"),
    )
    assert delete.seq == 4
