"""The membership roster and per-user client ids on a real 3-master Redis Cluster (issue 9): the
append script's new keys share the shard's slot, and a client id bound in the user's slot is
honoured by a room on another master."""

from __future__ import annotations

from redis.crc import key_slot
from roomstream_contracts.events import Envelope, EventKind
from roomstream_kit.eventlog import Access, AppendStatus, EventLog, RoomCheck
from roomstream_kit.redis import AnyRedis
from roomstream_kit.settings import CommonSettings

from tests.deploy.redis_cluster import RedisClusterProcesses
from tests.support.events import envelope


async def test_roster_and_per_user_ids_on_a_cluster(
    redis_cluster: RedisClusterProcesses, client: AnyRedis, settings: CommonSettings
) -> None:
    keys = settings.keys
    log = EventLog.from_settings(client, settings)
    owners = redis_cluster.slot_owner()
    # Two rooms on different masters, and neither in ann's slot.
    user_slot = key_slot(keys.client_id("ann", "x").encode())
    rooms: list[str] = []
    for i in range(1000):
        room = f"p{i}"
        slot = key_slot(keys.log(keys.room_shard(room)).encode())
        if owners[slot] != owners[user_slot] and all(
            owners[slot] != owners[key_slot(keys.log(keys.room_shard(r)).encode())] for r in rooms
        ):
            rooms.append(room)
        if len(rooms) == 2:
            break
    one, two = rooms
    for room in rooms:
        for key in (keys.kinds(keys.room_shard(room)), keys.roster(room), keys.deleted(room)):
            assert key_slot(key.encode()) == key_slot(keys.log(keys.room_shard(room)).encode())
        created = envelope(
            EventKind.ROOM_CREATED,
            room,
            "ann",
            name=room,
            kind="private",
            owner="ann",
            members=["bob"],
        )
        assert (await log.append(created, room_check=RoomCheck.NEW)).seq == 1

    left = envelope(EventKind.MEMBER_LEFT, one, "bob", by="ann")
    assert (await log.append(left, access=Access.LEAVE)).seq == 2
    join = envelope(EventKind.MEMBER_JOINED, one, "bob", by="bob")
    assert (await log.append(join, access=Access.JOIN)).status == AppendStatus.FORBIDDEN

    def send(room: str) -> Envelope:
        return envelope(EventKind.MESSAGE, room, "ann", text="hi", client_id="same")

    first = await log.append(send(one), dedupe_id="same", access=Access.MEMBER)
    again = await log.append(send(two), dedupe_id="same", access=Access.MEMBER)
    assert (first.status, first.seq) == (AppendStatus.OK, 3)
    assert (again.status, again.room, again.seq) == (AppendStatus.DUPLICATE, one, 3)
    assert int(await client.hget(keys.seq(keys.room_shard(two)), two)) == 1
