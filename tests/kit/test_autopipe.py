"""`AutoPipeline`: concurrent `EventLog.append` calls sent as one pipeline keep every guarantee of
the append (gapless seqs, per-user idempotency, checks), an error reply fails only its own call,
and a server that lost its scripts (restart, SCRIPT FLUSH) gets the script again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.autopipe import AutoPipeline
from roomstream_kit.eventlog import Access, AppendStatus, EventLog, RoomCheck

from tests.rooms.helpers import message
from tests.support import rooms
from tests.support.redis_server import OwnRedis, require_redis_server


def pipelined(redis: aioredis.Redis, keys: StreamKeys) -> tuple[AutoPipeline, EventLog]:
    pipe = AutoPipeline(redis)
    return pipe, EventLog(redis, keys, script=pipe.script, command=pipe.command)


async def test_concurrent_appends_keep_seqs_idempotency_and_checks(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = StreamKeys(namespace=namespace)
    await rooms.create_room(redis_client, keys, "a", "ann", members=["ben"])
    await rooms.create_room(redis_client, keys, "b", "ann", kind="private")
    pipe, log = pipelined(redis_client, keys)

    def send(room: str, user: str, cid: str, access: Access = Access.MEMBER):
        return log.append(
            message(room, user, cid), room_check=RoomCheck.EXISTS, dedupe_id=cid, access=access
        )

    first = await asyncio.gather(*(send("a", "ben", f"m{i}") for i in range(50)))
    assert [r.status for r in first] == [AppendStatus.OK] * 50
    assert sorted(r.seq for r in first if r.seq) == list(range(2, 52))
    # Repeats (one of them with the same id in one pipeline twice) and refusals, all at once.
    mixed = await asyncio.gather(
        send("a", "ben", "m0"),
        send("a", "ben", "m7"),
        send("a", "ben", "new"),
        send("a", "ben", "new"),
        send("b", "ben", "x1"),  # not a member of the private room
        send("nope", "ben", "x2"),
        send("b", "ben", "m3"),  # m3 is bound to room a
    )
    assert [(r.status, r.seq) for r in mixed[:2]] == [
        (AppendStatus.DUPLICATE, first[0].seq),
        (AppendStatus.DUPLICATE, first[7].seq),
    ]
    assert {mixed[2].status, mixed[3].status} == {AppendStatus.OK, AppendStatus.DUPLICATE}
    assert mixed[2].seq == mixed[3].seq == 52
    assert [r.status for r in mixed[4:6]] == [AppendStatus.FORBIDDEN, AppendStatus.NO_ROOM]
    assert (mixed[6].status, mixed[6].room, mixed[6].seq) == (
        AppendStatus.DUPLICATE,
        "a",
        first[3].seq,
    )
    assert int(await redis_client.hget(keys.seq(keys.room_shard("a")), "a") or 0) == 52

    # An error reply fails its own call only; the calls beside it in the pipeline succeed.
    bad, good = await asyncio.gather(
        pipe.command("HGET", keys.seq(keys.room_shard("a"))),  # wrong number of arguments
        send("a", "ann", "after-error"),
        return_exceptions=True,
    )
    assert isinstance(bad, ResponseError)
    assert not isinstance(good, BaseException) and good.seq == 53


async def test_a_server_without_the_script_gets_it_again(tmp_path: Path) -> None:
    require_redis_server()
    server = OwnRedis(tmp_path)
    server.start()
    redis = aioredis.Redis(port=server.port)
    try:
        keys = StreamKeys(namespace="own")
        await rooms.create_room(redis, keys, "a", "ann")
        _, log = pipelined(redis, keys)
        assert (await log.append(message("a", "ann", "1"), dedupe_id="1")).seq == 2
        await redis.script_flush()
        again = await asyncio.gather(
            *(log.append(message("a", "ann", f"n{i}"), dedupe_id=f"n{i}") for i in range(5))
        )
        assert sorted(r.seq for r in again if r.seq) == [3, 4, 5, 6, 7]
        assert int(await redis.hget(keys.seq(keys.room_shard("a")), "a") or 0) == 7
    finally:
        await redis.aclose()
        server.stop()
