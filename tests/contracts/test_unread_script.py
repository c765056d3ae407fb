"""`UNREAD_SCRIPT` against real Redis and the real append script: exactly the messages above the
marker, by others, not deleted, capped; across many scan steps; texts that look like the
needles do not fool it."""

from __future__ import annotations

import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.userstream import UNREAD_SCRIPT
from roomstream_kit.eventlog import EventLog, RoomCheck

ROOM = "mixed"


def event(event_kind: EventKind, user: str, **data: object) -> Envelope:
    return Envelope(
        id=new_event_id(), kind=event_kind, room=ROOM, user=user, ts=now_ms(), data=data
    )


async def unread(
    redis: aioredis.Redis,
    keys: StreamKeys,
    marker: int,
    top: int,
    cap: int,
    step: int,
    user: str = "reader",
) -> int:
    own = f'"user":"{user}",'
    count = await redis.eval(  # type: ignore[misc]
        UNREAD_SCRIPT, 2, keys.recent(ROOM), keys.deleted(ROOM), marker, top, cap, own, step
    )
    return int(count)


async def test_unread_counts_messages_by_others_not_deleted_across_steps(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    created = event(EventKind.ROOM_CREATED, "owner", name=ROOM, kind="public", owner="owner")
    assert (await log.append(created, room_check=RoomCheck.NEW)).seq == 1
    authors: dict[int, str] = {}  # seq -> author of each message
    for i in range(120):
        if i % 10 == 0:
            env = event(EventKind.MEMBER_JOINED, f"u{i}", by=f"u{i}")
        elif i % 7 == 0:  # the reader's own message: never unread for the reader
            env = event(EventKind.MESSAGE, "reader", text="mine", client_id=f"c{i}")
        else:  # texts that hold the needles, escaped inside the JSON string
            text = '"kind":"message", "user":"reader",' if i % 3 == 0 else f"m{i}"
            env = event(EventKind.MESSAGE, "writer", text=text, client_id=f"c{i}")
        result = await log.append(env)
        assert result.seq is not None
        if env.kind == EventKind.MESSAGE:
            authors[result.seq] = env.user or ""
    deleted = {s for s in (20, 50, 51, 99) if authors.get(s) == "writer"}
    for target in sorted(deleted):
        assert (await log.append(event(EventKind.MESSAGE_DELETED, "writer", target_seq=target))).ok
    top = 1 + 120 + len(deleted)  # the deletions themselves are not messages

    def want(marker: int, reader: str) -> int:
        return sum(1 for s, a in authors.items() if s > marker and a != reader and s not in deleted)

    for marker in (0, 1, 17, 60, top - 10, top):
        for step in (1, 7, 110, 1000):
            got = await unread(redis_client, keys, marker, top, 1000, step)
            assert got == want(marker, "reader"), (marker, step)
        assert await unread(redis_client, keys, marker, top, 5, 7) == min(want(marker, "reader"), 5)
    # Another reader counts the reader's own messages too.
    assert await unread(redis_client, keys, 1, top, 1000, 7, user="someone") == want(1, "someone")
    assert want(1, "someone") > want(1, "reader") > 0
