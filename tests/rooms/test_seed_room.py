"""The one room-seeding function (`roomstream_kit.rooms.seed_room`, used by the CLI, tests and
benchmarks) writes exactly what the rooms service writes for the same room."""

from __future__ import annotations

from roomstream_kit.eventlog import AppendStatus
from roomstream_kit.rooms import seed_room

from tests.rooms.helpers import (
    FAST_ENV,
    ROOMS,
    api,
    auth,
    delete_read_models,
    keys,
    redis_snapshot,
)


async def test_seeded_room_equals_what_the_rooms_service_writes(cluster, namespace, redis_client):
    k = keys(namespace)
    created = await seed_room(
        redis_client, k, "alpha", "olga", name="Alpha", kind="private", members=["bob", "olga"]
    )
    assert created.status is AppendStatus.OK and created.seq == 1
    seeded = await redis_snapshot(redis_client, namespace)
    assert seeded[k.members("alpha")[len(namespace) :]] == ["bob", "olga"]
    assert seeded[k.room("alpha")[len(namespace) :]]["kind"] == "private"
    # A second seed of the same room changes nothing.
    again = await seed_room(redis_client, k, "alpha", "eve", kind="public", members=["eve"])
    assert again.status is AppendStatus.ROOM_EXISTS
    assert await redis_snapshot(redis_client, namespace) == seeded
    # The membership authority was seeded with the room: a non-member is refused at once.
    rooms = cluster.start(ROOMS, env=FAST_ENV)
    async with api(rooms.url) as http:
        assert (await http.get("/rooms/alpha/members", headers=auth("eve"))).status_code == 403
        r = await http.get("/rooms/alpha/members", headers=auth("bob"))
        assert r.json() == {"members": ["bob", "olga"]}
        # The rooms service's own read models of the room, refilled from its projection.
        rooms.terminate()
        await delete_read_models(redis_client, namespace)
        rooms.start()
        assert await redis_snapshot(redis_client, namespace) == seeded
