"""The atomic append script through `roomstream_kit.eventlog.EventLog`, against real Redis."""

from __future__ import annotations

import asyncio

import orjson
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import Access, AppendStatus, EventLog, OwnerCheck, RoomCheck

from tests.conftest import REDIS_URL
from tests.support.events import envelope


async def create(log: EventLog, room: str, owner: str = "owner") -> None:
    env = envelope(EventKind.ROOM_CREATED, room, owner, name=room, kind="public", owner=owner)
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
            env = envelope(
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
        envelope(EventKind.MESSAGE, "idem", "ann", text="hi", client_id="c1"), dedupe_id="c1"
    )
    shard = keys.log(keys.room_shard("idem"))
    length = await redis_client.xlen(shard)
    again = await log.append(
        envelope(EventKind.MESSAGE, "idem", "ann", text="hi", client_id="c1"), dedupe_id="c1"
    )
    assert first.status == AppendStatus.OK and again.status == AppendStatus.DUPLICATE
    assert (again.seq, again.event_id) == (first.seq, first.event_id)
    assert again.ok
    assert await redis_client.xlen(shard) == length
    # The id is per user: another user's c1 is a new message.
    other = await log.append(
        envelope(EventKind.MESSAGE, "idem", "ben", text="hi", client_id="c1"), dedupe_id="c1"
    )
    assert other.status == AppendStatus.OK and other.seq == (first.seq or 0) + 1
    assert 0 < await redis_client.ttl(keys.dedupe("idem", "ann", "c1")) <= log.dedupe_ttl_s


async def test_room_checks(redis_client: aioredis.Redis, namespace: str) -> None:
    log = EventLog(redis_client, StreamKeys(namespace=namespace))
    missing = await log.append(
        envelope(EventKind.MESSAGE, "ghost", "ann", text="x", client_id="1"),
        room_check=RoomCheck.EXISTS,
    )
    assert missing.status == AppendStatus.NO_ROOM and not missing.ok and missing.seq is None
    await create(log, "real")
    again = await log.append(
        envelope(EventKind.ROOM_CREATED, "real", "ann", name="x", kind="public", owner="ann"),
        room_check=RoomCheck.NEW,
    )
    assert again.status == AppendStatus.ROOM_EXISTS
    ok = await log.append(
        envelope(EventKind.MEMBER_JOINED, "real", "ann", by="ann"), room_check=RoomCheck.EXISTS
    )
    assert ok.status == AppendStatus.OK and ok.seq == 2
    # Live kinds get no seq and do not move the room's seq.
    live = await log.append(envelope(EventKind.TYPING, "real", "ann"))
    assert live.status == AppendStatus.OK and live.seq is None and live.stream_id
    after = await log.append(envelope(EventKind.MEMBER_LEFT, "real", "ann", by="ann"))
    assert after.seq == 3


async def test_owner_check(redis_client: aioredis.Redis, namespace: str) -> None:
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    await create(log, "own")
    msg = await log.append(envelope(EventKind.MESSAGE, "own", "ann", text="v1", client_id="m"))
    assert msg.seq == 2

    def edit(user: str, target: int) -> Envelope:
        return envelope(EventKind.MESSAGE_EDITED, "own", user, target_seq=target, text="v2")

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
        envelope(EventKind.MESSAGE_DELETED, "own", "ann", target_seq=2),
        owner_check=OwnerCheck(2, "ann"),
    )
    assert delete.seq == 4


async def test_roster_decides_membership_atomically(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """room_created / member_joined / member_left change the roster in the append step; the
    access checks read it (issue 9 item 1)."""
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    created = envelope(
        EventKind.ROOM_CREATED,
        "vault",
        "olga",
        name="v",
        kind="private",
        owner="olga",
        members=["yuri"],
    )
    assert (await log.append(created, room_check=RoomCheck.NEW)).seq == 1
    assert await redis_client.smembers(keys.roster("vault")) == {b"olga", b"yuri"}
    assert await redis_client.hget(keys.kinds(keys.room_shard("vault")), "vault") == b"private"

    def msg(user: str) -> Envelope:
        return envelope(EventKind.MESSAGE, "vault", user, text="x", client_id=new_event_id())

    def joined(user: str) -> Envelope:
        return envelope(EventKind.MEMBER_JOINED, "vault", user, by=user)

    def left(user: str) -> Envelope:
        return envelope(EventKind.MEMBER_LEFT, "vault", user, by="olga")

    assert (await log.append(msg("yuri"), access=Access.MEMBER)).seq == 2
    assert (await log.append(msg("eve"), access=Access.MEMBER)).status == AppendStatus.FORBIDDEN
    # A private room: a join is refused, a grant (the rooms API authorized it) appends.
    assert (await log.append(joined("eve"), access=Access.JOIN)).status == AppendStatus.FORBIDDEN
    assert (await log.append(joined("yuri"), access=Access.JOIN)).status == AppendStatus.MEMBER
    assert (await log.append(joined("eve"), access=Access.GRANT)).seq == 3
    assert (await log.append(joined("eve"), access=Access.GRANT)).status == AppendStatus.MEMBER
    # Removal: the next check in the same instant sees it; leaving twice appends once.
    assert (await log.append(left("yuri"), access=Access.LEAVE)).seq == 4
    assert (await log.append(left("yuri"), access=Access.LEAVE)).status == AppendStatus.NOT_MEMBER
    assert (await log.append(msg("yuri"), access=Access.MEMBER)).status == AppendStatus.FORBIDDEN
    assert (await log.append(joined("yuri"), access=Access.JOIN)).status == AppendStatus.FORBIDDEN
    # Refusals appended nothing.
    assert int(await redis_client.hget(keys.seq(keys.room_shard("vault")), "vault")) == 4
    assert await redis_client.smembers(keys.roster("vault")) == {b"olga", b"eve"}
    # A public room: joining by oneself appends member_joined once.
    await create(log, "plaza")
    pub = envelope(EventKind.MEMBER_JOINED, "plaza", "eve", by="eve")
    assert (await log.append(pub, access=Access.JOIN)).seq == 2
    assert (await log.append(pub, access=Access.JOIN)).status == AppendStatus.MEMBER


async def test_seed_roster_of_a_room_from_before_rosters(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """A room without a roster answers `unseeded`; seeding from a projection snapshot at seq S
    adds the membership events after S from the recent buffer, once."""
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    created = envelope(
        EventKind.ROOM_CREATED,
        "old",
        "olga",
        name="o",
        kind="private",
        owner="olga",
        members=["yuri"],
    )
    await log.append(created, room_check=RoomCheck.NEW)
    await log.append(envelope(EventKind.MEMBER_JOINED, "old", "ann", by="olga"))  # seq 2
    await log.append(envelope(EventKind.MEMBER_LEFT, "old", "yuri", by="olga"))  # seq 3
    await log.append(envelope(EventKind.MESSAGE, "old", "ann", text="x", client_id="1"))  # 4
    # Before rosters: no kinds entry, no roster.
    await redis_client.hdel(keys.kinds(keys.room_shard("old")), "old")
    await redis_client.delete(keys.roster("old"))
    send = envelope(EventKind.MESSAGE, "old", "ann", text="y", client_id="2")
    assert (await log.append(send, access=Access.MEMBER)).status == AppendStatus.UNSEEDED
    assert await log.access("old", "ann") == (True, None, False)
    # The projection had applied up to seq 1 (olga, yuri); events 2..4 come from the buffer.
    assert await log.seed_roster("old", "private", 1, ["olga", "yuri"]) == "ok"
    assert await redis_client.smembers(keys.roster("old")) == {b"olga", b"ann"}
    assert await log.seed_roster("old", "private", 1, ["olga", "yuri", "eve"]) == "seeded"
    assert await log.access("old", "ann") == (True, "private", True)
    assert (await log.append(send, access=Access.MEMBER)).seq == 5
    # A snapshot older than the recent buffer is stale.
    await redis_client.hdel(keys.kinds(keys.room_shard("old")), "old")
    await redis_client.xtrim(keys.recent("old"), minid="4-0", approximate=False)
    assert await log.seed_roster("old", "private", 1, ["olga", "yuri"]) == "stale"
    assert await log.seed_roster("old", "private", 3, ["olga", "ann"]) == "ok"
    assert await log.seed_roster("ghost", "public", 0, []) == "no_room"


async def test_deleted_message_is_final(redis_client: aioredis.Redis, namespace: str) -> None:
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    await create(log, "del")
    msg = await log.append(envelope(EventKind.MESSAGE, "del", "ann", text="v1", client_id="m"))
    assert msg.seq == 2
    delete = envelope(EventKind.MESSAGE_DELETED, "del", "ann", target_seq=2)
    assert (await log.append(delete, owner_check=OwnerCheck(2, "ann"))).seq == 3
    edit = envelope(EventKind.MESSAGE_EDITED, "del", "ann", target_seq=2, text="v2")
    for env in (edit, delete):
        # With the owner check, and without it (the gateway's path after asking history).
        assert (await log.append(env, owner_check=OwnerCheck(2, "ann"))).status == "deleted"
        assert (await log.append(env)).status == AppendStatus.DELETED
    assert int(await redis_client.hget(keys.seq(keys.room_shard("del")), "del")) == 3


async def test_client_id_is_unique_per_user_across_rooms(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    await create(log, "one")
    await create(log, "two")

    def send(room: str, user: str = "ann") -> Envelope:
        return envelope(EventKind.MESSAGE, room, user, text="hi", client_id="c1")

    first = await log.append(send("one"), dedupe_id="c1")
    again = await log.append(send("two"), dedupe_id="c1")
    assert first.status == AppendStatus.OK and first.room == "one"
    assert again.status == AppendStatus.DUPLICATE and again.ok
    assert (again.room, again.seq, again.event_id) == ("one", first.seq, first.event_id)
    assert int(await redis_client.hget(keys.seq(keys.room_shard("two")), "two")) == 1
    assert 0 < await redis_client.ttl(keys.client_id("ann", "c1")) <= log.dedupe_ttl_s
    # Bound to a room whose append never happened (a lost connection): another room is refused,
    # the bound room still takes the retry.
    await redis_client.set(keys.client_id("ann", "c2"), "one")
    lost = envelope(EventKind.MESSAGE, "two", "ann", text="x", client_id="c2")
    assert (await log.append(lost, dedupe_id="c2")).status == AppendStatus.ID_IN_USE
    retry = envelope(EventKind.MESSAGE, "one", "ann", text="x", client_id="c2")
    assert (await log.append(retry, dedupe_id="c2")).seq == 3
    # A refused send frees its id.
    ghost = envelope(EventKind.MESSAGE, "ghost", "ann", text="x", client_id="c3")
    refused = await log.append(ghost, room_check=RoomCheck.EXISTS, dedupe_id="c3")
    assert refused.status == AppendStatus.NO_ROOM
    assert await redis_client.exists(keys.client_id("ann", "c3")) == 0


def test_dedupe_keys_of_users_with_colons_are_distinct_and_plain_ids_keep_their_names() -> None:
    keys = StreamKeys(namespace="ns")
    assert keys.dedupe("r", "a", "b:c") != keys.dedupe("r", "a:b", "c")
    assert keys.client_id("a", "b:c").split("}")[1] != keys.client_id("a:b", "c").split("}")[1]
    assert keys.client_id("a", "%3Ab") != keys.client_id("a%3A", "b")
    assert keys.dedupe("r", "a%", "3A") != keys.dedupe("r", "a:", "")
    assert keys.dedupe("r", "ann", "c1").endswith(":r:ann:c1")
    assert keys.client_id("ann", "c1").endswith(":ann:c1")
