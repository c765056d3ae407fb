"""The Redis read models (key names from `roomstream_contracts.streams.StreamKeys`; the layout of
the room hash and of membership is written once in `roomstream_kit.rooms`, shared with the tools
that make rooms without this service).

| key | type | content |
|---|---|---|
| `room(ROOM)` | hash | id, name, kind, owner, created_at |
| `members(ROOM)` | set | the room's members |
| `presence(ROOM)` | hash | online member → live connections |
| `user_rooms(USER)` | set | the user's rooms |
| `user_conns(USER)` | hash | live connection → node |
| `node_conns(NODE)` | hash | live connection → user |

Invariant: when `room(ROOM)` exists, `members(ROOM)` and `presence(ROOM)` are complete. The room
hash is written last when a room is (re)filled, so readers that find it may trust the other two;
a writer that finds it missing refills the whole room from Postgres instead of patching it.
Writers never delete a whole key before rewriting it, so readers never see an empty window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from roomstream_contracts.streams import StreamKeys
from roomstream_kit import rooms
from roomstream_kit.redis import AnyRedis, text

from .store import RoomRow

Pipeline = Any  # redis-py (cluster) pipeline; its generics do not help here


class ReadModels:
    def __init__(self, redis: AnyRedis, keys: StreamKeys) -> None:
        self.redis = redis
        self.keys = keys

    # -- reads ---------------------------------------------------------------------------------

    async def room(self, room: str) -> dict[str, str] | None:
        raw: Any = await self.redis.hgetall(self.keys.room(room))
        return {text(k): text(v) for k, v in raw.items()} if raw else None

    async def room_seq(self, room: str) -> int | None:
        """The room's last seq in the log (the append script's counter)."""
        raw = await self.redis.hget(self.keys.seq(self.keys.room_shard(room)), room)
        return int(raw) if raw is not None else None

    async def members(self, room: str) -> list[str]:
        raw: Any = await self.redis.smembers(self.keys.members(room))
        return sorted(text(m) for m in raw)

    async def is_member(self, room: str, user: str) -> bool:
        return bool(await self.redis.sismember(self.keys.members(room), user))

    async def user_rooms(self, user: str) -> list[str]:
        raw: Any = await self.redis.smembers(self.keys.user_rooms(user))
        return sorted(text(m) for m in raw)

    async def presence(self, room: str) -> dict[str, int]:
        raw: Any = await self.redis.hgetall(self.keys.presence(room))
        return {text(k): int(v) for k, v in raw.items()}

    async def missing_rooms(self, rooms: Iterable[str]) -> set[str]:
        """Rooms whose room hash is missing (their read models must be refilled whole)."""
        rooms = list(rooms)
        if not rooms:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.exists(self.keys.room(room))
            found = await pipe.execute()
        return {room for room, n in zip(rooms, found, strict=True) if not n}

    # -- whole-key rewrites (refill) -----------------------------------------------------------

    async def replace_room(
        self, row: RoomRow, members: Iterable[str], presence: Mapping[str, int]
    ) -> None:
        """Rewrite a room's members and presence, then its room hash (the completeness mark)."""
        members = set(members)
        mkey, pkey = self.keys.members(row.id), self.keys.presence(row.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(mkey)
            pipe.hkeys(pkey)
            old_members, old_online = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            self._replace_set(pipe, mkey, {text(m) for m in old_members}, members)
            if presence:
                online: Any = {u: str(n) for u, n in presence.items()}
                pipe.hset(pkey, mapping=online)
            stale = {text(u) for u in old_online} - set(presence)
            if stale:
                pipe.hdel(pkey, *stale)
            rooms.put_room(pipe, self.keys, row.record())
            await pipe.execute()

    async def replace_user_rooms(self, rooms_by_user: Mapping[str, Iterable[str]]) -> None:
        users = list(rooms_by_user)
        if not users:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.smembers(self.keys.user_rooms(user))
            olds = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for user, old in zip(users, olds, strict=True):
                self._replace_set(
                    pipe,
                    self.keys.user_rooms(user),
                    {text(r) for r in old},
                    set(rooms_by_user[user]),
                )
            await pipe.execute()

    @staticmethod
    def _replace_set(pipe: Pipeline, key: str, old: set[str], new: set[str]) -> None:
        if new - old:
            pipe.sadd(key, *(new - old))
        if old - new:
            pipe.srem(key, *(old - new))

    # -- incremental writes (the projector's pipeline) -----------------------------------------

    def put_room(self, pipe: Pipeline, row: RoomRow) -> None:
        rooms.put_room(pipe, self.keys, row.record())

    def set_membership(self, pipe: Pipeline, room: str, user: str, member: bool) -> None:
        rooms.set_membership(pipe, self.keys, room, user, member)

    def set_presence(self, pipe: Pipeline, room: str, user: str, connections: int) -> None:
        if connections > 0:
            pipe.hset(self.keys.presence(room), user, str(connections))
        else:
            pipe.hdel(self.keys.presence(room), user)

    def set_conn(self, pipe: Pipeline, conn: str, user: str, node: str, live: bool) -> None:
        if live:
            pipe.hset(self.keys.user_conns(user), conn, node)
            pipe.hset(self.keys.node_conns(node), conn, user)
        else:
            pipe.hdel(self.keys.user_conns(user), conn)
            pipe.hdel(self.keys.node_conns(node), conn)

    # -- whole deployment ----------------------------------------------------------------------

    def patterns(self) -> list[str]:
        """SCAN patterns of every read-model key of this namespace (rebuild, tests)."""
        ns = self.keys.namespace
        return [
            f"{ns}:room:*",
            f"{ns}:members:*",
            f"{ns}:presence:*",
            f"{ns}:user-rooms:*",
            f"{ns}:user-conns:*",
            f"{ns}:node-conns:*",
        ]

    async def delete_all(self) -> int:
        """Delete every read-model key of the namespace (rebuild)."""
        n = 0
        for pattern in self.patterns():
            batch: list[bytes] = []
            async for key in self.redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    n += await self.redis.delete(*batch)
                    batch = []
            if batch:
                n += await self.redis.delete(*batch)
        return n
