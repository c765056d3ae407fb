"""The cached latest page of a room ("latest 50 messages"), kept correct under writes.

Redis hash `keys.history_latest(room)`: `page` (the JSON answer) and `gen`. The persister bumps
`gen` and drops `page` after every commit that touches the room; a reader stores the page it
computed only if `gen` is still what it read before querying Postgres. So a page computed from a
snapshot older than a commit can never be stored after that commit's invalidation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from roomstream_contracts.streams import StreamKeys
from roomstream_kit.redis import AnyRedis

_STORE_IF_GEN = """
local gen = redis.call('HGET', KEYS[1], 'gen') or '0'
if gen ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'page', ARGV[2], 'gen', gen)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class LatestCache:
    def __init__(self, redis: AnyRedis, keys: StreamKeys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_ms = ttl_s * 1000
        self._store = redis.register_script(_STORE_IF_GEN)

    async def get(self, room: str) -> tuple[bytes | None, str]:
        """The cached page (or None) and the generation to pass to `put`."""
        values: list[Any] = await self.redis.hmget(self.keys.history_latest(room), ["page", "gen"])
        page, gen = values
        return page, gen.decode() if gen else "0"

    async def put(self, room: str, gen: str, page: bytes) -> bool:
        stored = await self._store(
            keys=[self.keys.history_latest(room)], args=[gen, page, self.ttl_ms]
        )
        return bool(stored)

    async def invalidate(self, rooms: Iterable[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                key = self.keys.history_latest(room)
                pipe.hincrby(key, "gen", 1)
                pipe.hdel(key, "page")
                pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()
